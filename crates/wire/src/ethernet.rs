//! Ethernet II frames with IEEE 802.1Q VLAN tags (and an 802.1ad QinQ outer tag).

use core::fmt;

use crate::error::{need, room, Error, Result};

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Builds an address from a byte slice of exactly six bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let octets: [u8; 6] = bytes.try_into().map_err(|_| Error::Malformed {
            what: "ethernet address",
            reason: "not six bytes",
        })?;
        Ok(Self(octets))
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group bit (I/G) set: multicast or broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// A unicast address that is not all zeros.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The EtherType / TPID field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: Self = Self(0x0800);
    /// ARP.
    pub const ARP: Self = Self(0x0806);
    /// IPv6.
    pub const IPV6: Self = Self(0x86dd);
    /// IEEE 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: Self = Self(0x8100);
    /// IEEE 802.1ad service VLAN tag (S-tag, "QinQ" outer tag).
    pub const QINQ: Self = Self(0x88a8);

    /// True for a TPID announcing a VLAN tag.
    pub const fn is_vlan_tag(self) -> bool {
        self.0 == Self::VLAN.0 || self.0 == Self::QINQ.0
    }
}

mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
    /// A VLAN tag: TCI then the encapsulated EtherType, relative to the tag start.
    pub const TAG_TCI: Range<usize> = 0..2;
    pub const TAG_ETHERTYPE: Range<usize> = 2..4;
    pub const TAG_LEN: usize = 4;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = field::TAG_LEN;

/// The 802.1Q Tag Control Information: priority, drop-eligible bit, VLAN id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct VlanTag {
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits).
    pub vid: u16,
}

impl VlanTag {
    /// Decodes a TCI word.
    pub const fn from_tci(tci: u16) -> Self {
        Self {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// Encodes the TCI word (out-of-range fields are masked).
    pub const fn tci(&self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }
}

/// What lies under the MAC addresses once VLAN tags are walked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct L2Encapsulation {
    /// EtherType of the network-layer payload.
    pub ethertype: EtherType,
    /// The customer (inner, or only) VLAN tag, if any.
    pub vlan: Option<VlanTag>,
    /// An 802.1ad service tag that was skipped, if any.
    pub outer_vlan: Option<VlanTag>,
    /// Offset of the network-layer header from the start of the frame.
    pub header_len: usize,
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer that holds at least the untagged header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("ethernet header", buffer.as_ref(), HEADER_LEN)?;
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> EthernetAddress {
        let d = &self.buffer.as_ref()[field::DESTINATION];
        EthernetAddress([d[0], d[1], d[2], d[3], d[4], d[5]])
    }

    /// Source MAC.
    pub fn src_addr(&self) -> EthernetAddress {
        let d = &self.buffer.as_ref()[field::SOURCE];
        EthernetAddress([d[0], d[1], d[2], d[3], d[4], d[5]])
    }

    /// The EtherType right after the MAC addresses (a TPID if tagged).
    pub fn ethertype(&self) -> EtherType {
        let d = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([d[0], d[1]]))
    }

    /// Walks at most two VLAN tags: an 802.1ad S-tag (skipped) followed by an
    /// 802.1Q C-tag, or a single C-tag. Anything deeper is refused rather than
    /// walked without bound.
    pub fn encapsulation(&self) -> Result<L2Encapsulation> {
        let buf = self.buffer.as_ref();
        let mut ethertype = self.ethertype();
        let mut offset = field::PAYLOAD;
        let mut outer_vlan = None;
        let mut vlan = None;
        if ethertype == EtherType::QINQ {
            let tag = read_tag(buf, offset)?;
            outer_vlan = Some(tag.0);
            ethertype = tag.1;
            offset += field::TAG_LEN;
        }
        if ethertype == EtherType::VLAN {
            let tag = read_tag(buf, offset)?;
            vlan = Some(tag.0);
            ethertype = tag.1;
            offset += field::TAG_LEN;
        } else if outer_vlan.is_some() && ethertype == EtherType::QINQ {
            return Err(Error::Unsupported {
                what: "ethernet",
                reason: "stacked 802.1ad tags",
            });
        }
        if ethertype.is_vlan_tag() {
            return Err(Error::Unsupported {
                what: "ethernet",
                reason: "more than two VLAN tags",
            });
        }
        Ok(L2Encapsulation {
            ethertype,
            vlan,
            outer_vlan,
            header_len: offset,
        })
    }

    /// Everything after the untagged header (tags included, if any).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

fn read_tag(buf: &[u8], offset: usize) -> Result<(VlanTag, EtherType)> {
    need("vlan tag", buf, offset + field::TAG_LEN)?;
    let t = &buf[offset..offset + field::TAG_LEN];
    let tci = u16::from_be_bytes([t[field::TAG_TCI.start], t[field::TAG_TCI.start + 1]]);
    let et = u16::from_be_bytes([
        t[field::TAG_ETHERTYPE.start],
        t[field::TAG_ETHERTYPE.start + 1],
    ]);
    Ok((VlanTag::from_tci(tci), EtherType(et)))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType right after the MAC addresses.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Mutable access to everything after the untagged header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// An Ethernet header in meaning form: addresses, optional C-tag, EtherType.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src_addr: EthernetAddress,
    /// Destination MAC.
    pub dst_addr: EthernetAddress,
    /// An 802.1Q tag to emit (an S-tag read on parse is dropped).
    pub vlan: Option<VlanTag>,
    /// EtherType of the payload.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses addresses and tags.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self> {
        let encap = frame.encapsulation()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            vlan: encap.vlan,
            ethertype: encap.ethertype,
        })
    }

    /// Header length this representation emits.
    pub const fn header_len(&self) -> usize {
        match self.vlan {
            Some(_) => HEADER_LEN + VLAN_TAG_LEN,
            None => HEADER_LEN,
        }
    }

    /// Writes the header at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        room(buf, len)?;
        buf[field::DESTINATION].copy_from_slice(&self.dst_addr.0);
        buf[field::SOURCE].copy_from_slice(&self.src_addr.0);
        match self.vlan {
            Some(tag) => {
                buf[field::ETHERTYPE].copy_from_slice(&EtherType::VLAN.0.to_be_bytes());
                buf[14..16].copy_from_slice(&tag.tci().to_be_bytes());
                buf[16..18].copy_from_slice(&self.ethertype.0.to_be_bytes());
            }
            None => buf[field::ETHERTYPE].copy_from_slice(&self.ethertype.0.to_be_bytes()),
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const DST: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);

    #[test]
    fn untagged_frame() {
        let mut buf = [0u8; 20];
        buf[..6].copy_from_slice(&DST.0);
        buf[6..12].copy_from_slice(&SRC.0);
        buf[12..14].copy_from_slice(&[0x08, 0x00]);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(frame.dst_addr(), DST);
        assert_eq!(frame.src_addr(), SRC);
        let encap = frame.encapsulation().unwrap();
        assert_eq!(encap.ethertype, EtherType::IPV4);
        assert_eq!(encap.header_len, 14);
        assert_eq!(encap.vlan, None);
    }

    #[test]
    fn short_frame_is_truncated() {
        assert!(matches!(
            EthernetFrame::new_checked(&[0u8; 13][..]),
            Err(Error::Truncated { needed: 14, .. })
        ));
    }

    #[test]
    fn single_vlan_tag() {
        let repr = EthernetRepr {
            src_addr: SRC,
            dst_addr: DST,
            vlan: Some(VlanTag {
                pcp: 5,
                dei: true,
                vid: 100,
            }),
            ethertype: EtherType::IPV6,
        };
        let mut buf = [0u8; 18];
        assert_eq!(repr.emit(&mut buf).unwrap(), 18);
        assert_eq!(&buf[12..14], &[0x81, 0x00]);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        let encap = frame.encapsulation().unwrap();
        assert_eq!(encap.header_len, 18);
        assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
    }

    #[test]
    fn qinq_outer_tag_is_skipped() {
        let mut buf = [0u8; 22];
        buf[12..14].copy_from_slice(&[0x88, 0xa8]);
        buf[14..16].copy_from_slice(&0x0007u16.to_be_bytes());
        buf[16..18].copy_from_slice(&[0x81, 0x00]);
        buf[18..20].copy_from_slice(&0x002au16.to_be_bytes());
        buf[20..22].copy_from_slice(&[0x08, 0x06]);
        let encap = EthernetFrame::new_checked(&buf[..])
            .unwrap()
            .encapsulation()
            .unwrap();
        assert_eq!(encap.outer_vlan.map(|t| t.vid), Some(7));
        assert_eq!(encap.vlan.map(|t| t.vid), Some(42));
        assert_eq!(encap.ethertype, EtherType::ARP);
        assert_eq!(encap.header_len, 22);
    }

    #[test]
    fn truncated_or_excessive_tags_are_errors() {
        let mut buf = [0u8; 16];
        buf[12..14].copy_from_slice(&[0x81, 0x00]);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            frame.encapsulation(),
            Err(Error::Truncated { .. })
        ));

        let mut buf = [0u8; 26];
        buf[12..14].copy_from_slice(&[0x88, 0xa8]);
        buf[16..18].copy_from_slice(&[0x81, 0x00]);
        buf[20..22].copy_from_slice(&[0x81, 0x00]);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            frame.encapsulation(),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn tci_round_trip() {
        let tag = VlanTag {
            pcp: 7,
            dei: false,
            vid: 4095,
        };
        assert_eq!(VlanTag::from_tci(tag.tci()), tag);
    }
}
