//! The XDP redirect program and its XSKMAP, loaded and attached with the raw
//! `bpf(2)` system call.
//!
//! The program is a handful of instructions assembled here, so the crate
//! needs neither clang at build time nor libbpf/libxdp at run time:
//!
//! ```text
//! [optional] if frame is shorter than an Ethernet header: XDP_PASS
//! [optional] if EtherType is one of the pass list:        XDP_PASS
//! return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)
//! ```
//!
//! A queue without a socket in the map falls back to `XDP_PASS`, so the
//! kernel keeps serving queues no worker owns.
//!
//! The program is attached with `BPF_LINK_CREATE`: the link lives as long as
//! its file descriptor, so the kernel detaches the program when the process
//! exits or crashes. (A netlink attachment would survive a crash and make the
//! next start fail with `EBUSY`.)

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::sys::{self, ProgLoad};
use crate::Error;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// `XDP_FLAGS_SKB_MODE` (include/uapi/linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Entries in the XSKMAP: one per possible RX queue index.
pub const XSKMAP_ENTRIES: u32 = 256;

/// At most this many EtherTypes may be passed to the kernel.
pub const MAX_PASS_ETHERTYPES: usize = 8;

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): the fast path, and required
    /// for zero-copy.
    #[default]
    Native,
    /// On the generic skb path (`XDP_FLAGS_SKB_MODE`): works on any
    /// interface, slower.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        }
    }
}

// Opcodes used by the redirect program (include/uapi/linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDX_MEM_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LD_IMM_DW: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_ADD_K: u8 = 0x07;
const JMP_JGT_X: u8 = 0x2d;
const JMP_JEQ_K: u8 = 0x15;
const JMP_CALL: u8 = 0x85;
const JMP_EXIT: u8 = 0x95;

// struct xdp_md field offsets.
const XDP_MD_DATA: i16 = 0;
const XDP_MD_DATA_END: i16 = 4;
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// Assembles the redirect program for the XSKMAP `map_fd`.
///
/// Frames whose EtherType is in `pass` go to the kernel stack; everything
/// else is redirected to the socket of its RX queue.
pub(crate) fn redirect_program(map_fd: RawFd, pass: &[u16]) -> Vec<Insn> {
    let mut prog = Vec::with_capacity(16 + pass.len());
    if !pass.is_empty() {
        // r2 = data, r3 = data_end, r4 = data + 14
        prog.push(Insn::new(LDX_MEM_W, 2, 1, XDP_MD_DATA, 0));
        prog.push(Insn::new(LDX_MEM_W, 3, 1, XDP_MD_DATA_END, 0));
        prog.push(Insn::new(ALU64_MOV_X, 4, 2, 0, 0));
        prog.push(Insn::new(ALU64_ADD_K, 4, 0, 0, 14));
        // A frame shorter than an Ethernet header is the kernel's problem.
        let short_jump = prog.len();
        prog.push(Insn::new(JMP_JGT_X, 4, 3, 0, 0));
        // r4 = EtherType as loaded by a little-endian machine.
        prog.push(Insn::new(LDX_MEM_H, 4, 2, 12, 0));
        let mut pass_jumps = vec![short_jump];
        for &ethertype in pass {
            pass_jumps.push(prog.len());
            let wire = i32::from(u16::from_ne_bytes(ethertype.to_be_bytes()));
            prog.push(Insn::new(JMP_JEQ_K, 4, 0, 0, wire));
        }
        // Redirect: 6 instructions, then the pass tail.
        let pass_label = prog.len() + 6;
        for at in pass_jumps {
            // Jump offsets count from the instruction after the jump.
            prog[at].off = (pass_label - at - 1) as i16;
        }
    }
    // r2 = ctx->rx_queue_index
    prog.push(Insn::new(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0));
    // r1 = &xsks (a 64-bit immediate spanning two slots)
    prog.push(Insn::new(LD_IMM_DW, 1, BPF_PSEUDO_MAP_FD, 0, map_fd));
    prog.push(Insn::new(0, 0, 0, 0, 0));
    // r3 = XDP_PASS: the action when the queue has no socket
    prog.push(Insn::new(ALU64_MOV_K, 3, 0, 0, XDP_PASS));
    prog.push(Insn::new(JMP_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP));
    prog.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    if !pass.is_empty() {
        prog.push(Insn::new(ALU64_MOV_K, 0, 0, 0, XDP_PASS));
        prog.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    }
    prog
}

fn object_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    out
}

/// An XSKMAP, the redirect program and the link attaching it to one
/// interface.
///
/// Dropping it closes the link, which detaches the program. It holds only
/// file descriptors and may be shared (`Arc`) by the workers serving
/// different RX queues of the same interface.
#[derive(Debug)]
pub struct XdpProgram {
    ifindex: u32,
    mode: XdpMode,
    // Field order is drop order: detach first, then free program and map.
    link: OwnedFd,
    prog: OwnedFd,
    map: OwnedFd,
}

impl XdpProgram {
    /// Loads the redirect program and attaches it to `ifindex` (in the
    /// calling thread's network namespace).
    ///
    /// `pass_ethertypes` (at most [`MAX_PASS_ETHERTYPES`]) lists EtherTypes
    /// handed to the kernel stack instead of the sockets, e.g. `0x0806` to
    /// let the kernel answer ARP. Empty means redirect everything: the
    /// dataplane then sees ARP and IPv6 neighbour discovery itself.
    pub fn attach(ifindex: u32, mode: XdpMode, pass_ethertypes: &[u16]) -> Result<Self, Error> {
        if pass_ethertypes.len() > MAX_PASS_ETHERTYPES {
            return Err(Error::Config(format!(
                "{} EtherTypes to pass to the kernel; at most {MAX_PASS_ETHERTYPES} are supported",
                pass_ethertypes.len()
            )));
        }
        let map = sys::map_create_u32(
            BPF_MAP_TYPE_XSKMAP,
            XSKMAP_ENTRIES,
            object_name("strait_xsks"),
        )
        .map_err(|source| Error::Bpf {
            what: "creating the XSKMAP",
            source,
            log: String::new(),
        })?;
        let insns = redirect_program(map.as_raw_fd(), pass_ethertypes);
        let prog = load_xdp(&insns)?;
        let link =
            sys::link_create(prog.as_fd(), ifindex, BPF_XDP, mode.flags()).map_err(|source| {
                Error::Attach {
                    ifindex,
                    mode,
                    source,
                }
            })?;
        Ok(XdpProgram {
            ifindex,
            mode,
            link,
            prog,
            map,
        })
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Where the program runs.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Steers RX queue `queue` to the AF_XDP socket `socket_fd`.
    pub fn insert_socket(&self, queue: u32, socket_fd: RawFd) -> Result<(), Error> {
        sys::map_update_u32(self.map.as_fd(), queue, socket_fd as u32).map_err(|source| {
            Error::Bpf {
                what: "inserting a socket into the XSKMAP",
                source,
                log: String::new(),
            }
        })?;
        Ok(())
    }

    /// Stops steering RX queue `queue` to any socket (frames are passed to
    /// the kernel again). Removing an absent entry is not an error.
    pub fn remove_socket(&self, queue: u32) {
        // ENOENT just means nothing was there; closing the socket removes
        // its entry anyway.
        let _ = sys::map_delete_u32(self.map.as_fd(), queue);
    }

    /// The link file descriptor (keeps the program attached).
    pub fn link_fd(&self) -> RawFd {
        self.link.as_raw_fd()
    }

    /// The program file descriptor.
    pub fn prog_fd(&self) -> RawFd {
        self.prog.as_raw_fd()
    }
}

/// Loads an XDP program; on failure retries with the verifier log enabled
/// so the error says why.
pub(crate) fn load_xdp(insns: &[Insn]) -> Result<OwnedFd, Error> {
    // The helpers used are GPL-only for some kernels; the crate's code is
    // Apache-2.0, which the kernel does not recognise, so declare the
    // dual licence the kernel accepts.
    let prog = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        expected_attach_type: BPF_XDP,
        license: c"Dual MIT/GPL",
        name: object_name("strait_redirect"),
    };
    match sys::prog_load(&prog, insns, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            let source = match sys::prog_load(&prog, insns, Some(&mut log)) {
                // Loading with a log succeeded where it failed without one:
                // keep the program rather than fail.
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).trim().to_owned();
            Err(Error::Bpf {
                what: "loading the XDP redirect program",
                source: if text.is_empty() { first } else { source },
                log: text,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_program_is_redirect_only() {
        let prog = redirect_program(7, &[]);
        assert_eq!(prog.len(), 6);
        assert_eq!(prog[0], Insn::new(LDX_MEM_W, 2, 1, 16, 0));
        assert_eq!(prog[1].code, LD_IMM_DW);
        assert_eq!(prog[1].regs, 1 | (BPF_PSEUDO_MAP_FD << 4));
        assert_eq!(prog[1].imm, 7);
        assert_eq!(prog[4].imm, BPF_FUNC_REDIRECT_MAP);
        assert_eq!(prog[5].code, JMP_EXIT);
    }

    #[test]
    fn pass_jumps_land_on_the_pass_tail() {
        let prog = redirect_program(3, &[0x0806, 0x86dd]);
        let tail = prog.len() - 2;
        assert_eq!(prog[tail], Insn::new(ALU64_MOV_K, 0, 0, 0, XDP_PASS));
        let jumps: Vec<usize> = prog
            .iter()
            .enumerate()
            .filter(|(_, i)| i.code == JMP_JGT_X || i.code == JMP_JEQ_K)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(jumps.len(), 3);
        for at in jumps {
            assert_eq!(at as i64 + 1 + i64::from(prog[at].off), tail as i64);
        }
        // EtherTypes are compared as a little-endian load of network order.
        assert!(prog.iter().any(|i| i.code == JMP_JEQ_K && i.imm == 0x0608));
        assert!(prog.iter().any(|i| i.code == JMP_JEQ_K && i.imm == 0xdd86));
    }

    #[test]
    fn too_many_pass_ethertypes_is_a_config_error() {
        let many = [0x0800u16; MAX_PASS_ETHERTYPES + 1];
        let err = XdpProgram::attach(1, XdpMode::Generic, &many).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
