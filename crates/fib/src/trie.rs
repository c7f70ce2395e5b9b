//! The lookup structure: a multibit trie with a 16-bit root and 8-bit strides,
//! leaf-pushed (every slot holds its longest match directly, so a lookup never
//! backtracks), with nodes stored compactly and shared between snapshots.
//!
//! Addresses are handled as left-aligned `u128` keys (an IPv4 address sits in
//! the top 32 bits), so one implementation serves both families: IPv4 walks
//! at most the root and two nodes (DIR-16-8-8), IPv6 at most the root and 14.
//!
//! # Compact nodes
//! A node covers 8 address bits, 256 slots. Stored flat that is 1 KiB even when
//! it holds one more-specific route, which for 100k scattered routes means tens
//! of megabytes, and for IPv6 (one node per byte of a long prefix) far more.
//! Instead a node stores two 256-bit maps and two dense arrays (the "leaf
//! compression" of poptrie and the Luleå scheme):
//! - `CHILD_MAP` bit `s`: slot `s` descends to a child node; its id is found by
//!   counting the child bits below `s` (one `popcnt` with per-word bases);
//! - `RUN_MAP` bit `s`: slot `s` is a leaf that starts a new run of equal
//!   leaves; the leaf of any slot is the last run start at or before it.
//!
//! A node is one `Arc<[u32]>` allocation: header, child ids, leaf results, and
//! the prefix length of each leaf (read only by the builder, never by lookups).
//!
//! # Updates
//! Nodes are immutable once built. Changing a route rewrites the nodes on its
//! path (and, for a short prefix, the nodes under it whose slots it paints) as
//! new allocations in the builder's arena; a published snapshot keeps its own
//! `Arc`s to the old ones. The first change after a snapshot copies the root
//! (256 KiB) and the arena chunks it touches (1024 pointers each), never the
//! nodes themselves.

use core::fmt;
use std::sync::Arc;

/// Address bits resolved by the root array.
const ROOT_BITS: u32 = 16;
/// Address bits resolved by each node below the root.
const STRIDE: u32 = 8;
const FANOUT: usize = 1 << STRIDE;
const ROOT_SLOTS: usize = 1 << ROOT_BITS;

/// Tag on an entry that refers to a child node rather than a result.
const CHILD: u32 = 1 << 31;

/// Offsets (in `u32` words) inside a node's allocation.
mod field {
    /// Four u64 bitmaps as eight u32 words (low half first): slot is a child.
    pub const CHILD_MAP: usize = 0;
    /// Four u64 bitmaps: slot is a leaf starting a new run.
    pub const RUN_MAP: usize = 8;
    /// Per 64-slot word: children in the words before it.
    pub const CHILD_BASE: usize = 16;
    /// Per 64-slot word: run starts in the words before it.
    pub const RUN_BASE: usize = 20;
    /// Index of the first leaf result.
    pub const LEAVES_AT: usize = 24;
    /// Index of the first leaf prefix length.
    pub const LENS_AT: usize = 25;
    /// Child ids start here.
    pub const BODY: usize = 26;
}

/// What a leaf-pushed slot resolves to: an action id (0 = no route) and the
/// length of the route that put it there (the builder needs it to know which
/// slots a later, longer or shorter, route may overwrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) action: u32,
    pub(crate) len: u8,
}

impl Leaf {
    pub(crate) const NONE: Self = Self { action: 0, len: 0 };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Leaf(Leaf),
    Child(u32),
}

/// An immutable compact node.
#[derive(Clone)]
struct Node(Arc<[u32]>);

impl Node {
    #[inline(always)]
    fn map(&self, at: usize, word: usize) -> u64 {
        u64::from(self.0[at + 2 * word]) | (u64::from(self.0[at + 2 * word + 1]) << 32)
    }

    /// The entry for `slot`: `CHILD | node id` or an action id.
    #[inline(always)]
    fn step(&self, slot: usize) -> u32 {
        let word = slot >> 6;
        let bit = slot & 63;
        let children = self.map(field::CHILD_MAP, word);
        if (children >> bit) & 1 != 0 {
            let below = (children & ((1u64 << bit) - 1)).count_ones();
            let i = self.0[field::CHILD_BASE + word] + below;
            CHILD | self.0[field::BODY + i as usize]
        } else {
            // Every leaf slot has a run start at or before it (the first leaf
            // slot always starts a run), so the count is at least one.
            let runs = self.map(field::RUN_MAP, word);
            let upto = (runs & (u64::MAX >> (63 - bit))).count_ones();
            let i = self.0[field::RUN_BASE + word] + upto - 1;
            self.0[(self.0[field::LEAVES_AT] + i) as usize]
        }
    }

    fn build(slots: &[Slot; FANOUT]) -> Self {
        // Gathered on the stack and written into the node's one allocation:
        // nodes are rebuilt on every route change, a whole table's worth
        // when tables are built.
        let mut child_map = [0u64; 4];
        let mut run_map = [0u64; 4];
        let mut children = [0u32; FANOUT];
        let mut leaves = [0u32; FANOUT];
        let mut lens = [0u32; FANOUT];
        let (mut nchildren, mut nleaves) = (0, 0);
        let mut previous = None;
        for (s, slot) in slots.iter().enumerate() {
            match *slot {
                Slot::Child(id) => {
                    child_map[s >> 6] |= 1 << (s & 63);
                    children[nchildren] = id;
                    nchildren += 1;
                }
                Slot::Leaf(leaf) => {
                    if previous != Some(leaf) {
                        run_map[s >> 6] |= 1 << (s & 63);
                        leaves[nleaves] = leaf.action;
                        lens[nleaves] = u32::from(leaf.len);
                        nleaves += 1;
                        previous = Some(leaf);
                    }
                }
            }
        }
        let mut header = [0u32; field::BODY];
        for (m, map) in [child_map, run_map].into_iter().enumerate() {
            let mut base = 0;
            for (w, word) in map.into_iter().enumerate() {
                header[8 * m + 2 * w] = word as u32;
                header[8 * m + 2 * w + 1] = (word >> 32) as u32;
                header[field::CHILD_BASE + 4 * m + w] = base;
                base += word.count_ones();
            }
        }
        let leaves_at = (field::BODY + nchildren) as u32;
        header[field::LEAVES_AT] = leaves_at;
        header[field::LENS_AT] = leaves_at + nleaves as u32;
        Self(
            header
                .iter()
                .chain(&children[..nchildren])
                .chain(&leaves[..nleaves])
                .chain(&lens[..nleaves])
                .copied()
                .collect(),
        )
    }

    fn expand(&self) -> [Slot; FANOUT] {
        let mut slots = [Slot::Leaf(Leaf::NONE); FANOUT];
        let leaves_at = self.0[field::LEAVES_AT] as usize;
        let lens_at = self.0[field::LENS_AT] as usize;
        let mut child = field::BODY;
        let mut run = None;
        for (s, slot) in slots.iter_mut().enumerate() {
            let (word, bit) = (s >> 6, s & 63);
            if (self.map(field::CHILD_MAP, word) >> bit) & 1 != 0 {
                *slot = Slot::Child(self.0[child]);
                child += 1;
            } else {
                if (self.map(field::RUN_MAP, word) >> bit) & 1 != 0 {
                    run = Some(run.map_or(0, |r| r + 1));
                }
                let r = run.unwrap_or(0);
                *slot = Slot::Leaf(Leaf {
                    action: self.0[leaves_at + r],
                    len: self.0[lens_at + r] as u8,
                });
            }
        }
        slots
    }

    fn bytes(&self) -> usize {
        self.0.len() * 4
    }
}

/// log2 of the nodes per arena chunk.
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Node storage addressed by id, in reference-counted chunks of [`CHUNK`]
/// nodes. A snapshot shares every chunk; the first change to a node after a
/// snapshot copies that node's chunk (1024 pointers), not the whole arena,
/// so publishing costs the same on a 1k-node and a 400k-node trie.
#[derive(Clone)]
struct Arena {
    chunks: Arc<Vec<Arc<[Node]>>>,
    len: u32,
}

impl Arena {
    #[inline(always)]
    fn get(&self, id: u32) -> &Node {
        &self.chunks[(id >> CHUNK_BITS) as usize][id as usize & (CHUNK - 1)]
    }

    fn set(&mut self, id: u32, node: Node) {
        let chunk = &mut Arc::make_mut(&mut self.chunks)[(id >> CHUNK_BITS) as usize];
        Arc::make_mut(chunk)[id as usize & (CHUNK - 1)] = node;
    }

    fn push(&mut self, node: Node, empty: &Node) -> u32 {
        let id = self.len;
        assert!(id < CHILD, "trie node ids exhausted");
        if id as usize % CHUNK == 0 {
            Arc::make_mut(&mut self.chunks).push(vec![empty.clone(); CHUNK].into());
        }
        self.len += 1;
        self.set(id, node);
        id
    }

    fn iter(&self) -> impl Iterator<Item = &Node> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(self.len as usize)
    }
}

/// The lookup half, shared by the builder and every snapshot built from it.
#[derive(Clone)]
pub(crate) struct Trie {
    root: Arc<Vec<u32>>,
    nodes: Arena,
}

impl Trie {
    /// The action id for a left-aligned key (0 when no route covers it).
    #[inline]
    pub(crate) fn lookup(&self, key: u128) -> u32 {
        let mut entry = self.root[(key >> (128 - ROOT_BITS)) as usize];
        let mut shift = 128 - ROOT_BITS;
        while entry & CHILD != 0 {
            // Nodes exist only above a route's last bit, so `shift` stays >= 0.
            shift -= STRIDE;
            let node = self.nodes.get(entry & !CHILD);
            entry = node.step(((key >> shift) as usize) & (FANOUT - 1));
        }
        entry
    }

    /// [`Trie::lookup`] for several keys walked in lockstep, one trie level
    /// per round: the loads of different keys are independent, so the CPU
    /// overlaps their cache misses instead of paying them one after another.
    #[inline]
    pub(crate) fn lookup_many<const N: usize>(&self, keys: &[u128; N]) -> [u32; N] {
        let mut entries = [0u32; N];
        for (e, key) in entries.iter_mut().zip(keys) {
            *e = self.root[(key >> (128 - ROOT_BITS)) as usize];
        }
        let mut shift = 128 - ROOT_BITS;
        while entries.iter().any(|e| e & CHILD != 0) {
            shift -= STRIDE;
            for (e, key) in entries.iter_mut().zip(keys) {
                if *e & CHILD != 0 {
                    let node = self.nodes.get(*e & !CHILD);
                    *e = node.step(((key >> shift) as usize) & (FANOUT - 1));
                }
            }
        }
        entries
    }

    /// Nodes in use and bytes held (root, node allocations, arena pointers).
    pub(crate) fn footprint(&self, free: usize) -> (usize, usize) {
        let nodes = self.nodes.len as usize - free;
        let bytes = self.root.len() * 4
            + self.nodes.chunks.len() * CHUNK * core::mem::size_of::<Node>()
            + self.nodes.iter().map(Node::bytes).sum::<usize>();
        (nodes, bytes)
    }
}

impl fmt::Debug for Trie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trie")
            .field("root_slots", &self.root.len())
            .field("node_slots", &self.nodes.len)
            .finish()
    }
}

/// Which slots a paint may overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paint {
    /// A route of length `len` is added or replaced: it wins over every slot
    /// currently painted by a route no longer than itself.
    Insert,
    /// The route of length `len` is withdrawn: exactly the slots it painted
    /// (those of its length inside its range) take the covering route.
    Remove,
}

impl Paint {
    fn overwrites(self, old: Leaf, len: u8) -> bool {
        match self {
            Self::Insert => old.len <= len,
            Self::Remove => old.len == len,
        }
    }
}

/// The control side: the trie plus what only updates need.
pub(crate) struct TrieBuilder {
    trie: Trie,
    /// Prefix length behind each root leaf (lookups never read it).
    root_lens: Vec<u8>,
    free: Vec<u32>,
    empty: Node,
}

impl fmt::Debug for TrieBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrieBuilder")
            .field("trie", &self.trie)
            .field("free_nodes", &self.free.len())
            .finish()
    }
}

impl TrieBuilder {
    pub(crate) fn new() -> Self {
        Self {
            trie: Trie {
                root: Arc::new(vec![0; ROOT_SLOTS]),
                nodes: Arena {
                    chunks: Arc::new(Vec::new()),
                    len: 0,
                },
            },
            root_lens: vec![0; ROOT_SLOTS],
            free: Vec::new(),
            empty: Node(Arc::from([])),
        }
    }

    /// The current trie; cheap (two reference counts).
    pub(crate) fn snapshot(&self) -> Trie {
        self.trie.clone()
    }

    #[cfg(test)]
    fn lookup(&self, key: u128) -> u32 {
        self.trie.lookup(key)
    }

    pub(crate) fn footprint(&self) -> (usize, usize) {
        self.trie.footprint(self.free.len())
    }

    /// Writes `leaf` into the slots of prefix (`key`, `len`) that `rule` allows.
    pub(crate) fn paint(&mut self, key: u128, len: u8, leaf: Leaf, rule: Paint) {
        let index = (key >> (128 - ROOT_BITS)) as usize;
        if u32::from(len) <= ROOT_BITS {
            let count = 1usize << (ROOT_BITS - u32::from(len));
            for s in index..index + count {
                let entry = self.trie.root[s];
                if entry & CHILD != 0 {
                    let slot = self.paint_node(entry & !CHILD, ROOT_BITS, key, len, leaf, rule);
                    self.set_root(s, slot);
                } else if rule.overwrites(
                    Leaf {
                        action: entry,
                        len: self.root_lens[s],
                    },
                    len,
                ) {
                    self.set_root(s, Slot::Leaf(leaf));
                }
            }
            return;
        }
        let entry = self.trie.root[index];
        let child = if entry & CHILD != 0 {
            entry & !CHILD
        } else if rule == Paint::Remove {
            // Nothing longer than /16 was ever placed here.
            return;
        } else {
            self.alloc_filled(Leaf {
                action: entry,
                len: self.root_lens[index],
            })
        };
        let slot = self.paint_node(child, ROOT_BITS, key, len, leaf, rule);
        self.set_root(index, slot);
    }

    fn set_root(&mut self, s: usize, slot: Slot) {
        let (entry, len) = match slot {
            Slot::Child(id) => (CHILD | id, 0),
            Slot::Leaf(l) => (l.action, l.len),
        };
        if self.trie.root[s] != entry || self.root_lens[s] != len {
            Arc::make_mut(&mut self.trie.root)[s] = entry;
            self.root_lens[s] = len;
        }
    }

    /// Paints inside node `id`, which covers key bits `start..start + STRIDE`,
    /// and returns what its parent slot should now hold: the node, or a leaf
    /// when nothing more specific than the parent's level remains below it.
    fn paint_node(
        &mut self,
        id: u32,
        start: u32,
        key: u128,
        len: u8,
        leaf: Leaf,
        rule: Paint,
    ) -> Slot {
        let mut slots = self.trie.nodes.get(id).expand();
        let end = start + STRIDE;
        let index = ((key >> (128 - end)) as usize) & (FANOUT - 1);
        let mut changed = false;
        if u32::from(len) <= end {
            let (first, count) = if u32::from(len) <= start {
                (0, FANOUT)
            } else {
                (index, 1usize << (end - u32::from(len)))
            };
            for slot in &mut slots[first..first + count] {
                let new = match *slot {
                    Slot::Child(c) => self.paint_node(c, end, key, len, leaf, rule),
                    Slot::Leaf(old) if rule.overwrites(old, len) => Slot::Leaf(leaf),
                    Slot::Leaf(_) => continue,
                };
                changed |= new != *slot;
                *slot = new;
            }
        } else {
            let child = match slots[index] {
                Slot::Child(c) => c,
                Slot::Leaf(_) if rule == Paint::Remove => return Slot::Child(id),
                Slot::Leaf(pushed) => self.alloc_filled(pushed),
            };
            let new = self.paint_node(child, end, key, len, leaf, rule);
            changed = new != slots[index];
            slots[index] = new;
        }
        if !changed {
            return Slot::Child(id);
        }
        // Only leaves pushed down from routes covering the whole node remain:
        // they are all the same leaf, and the parent slot can hold it directly.
        if slots
            .iter()
            .all(|s| matches!(s, Slot::Leaf(l) if u32::from(l.len) <= start))
        {
            self.release(id);
            return slots[0];
        }
        self.trie.nodes.set(id, Node::build(&slots));
        Slot::Child(id)
    }

    fn alloc_filled(&mut self, leaf: Leaf) -> u32 {
        let node = Node::build(&[Slot::Leaf(leaf); FANOUT]);
        match self.free.pop() {
            Some(id) => {
                self.trie.nodes.set(id, node);
                id
            }
            None => self.trie.nodes.push(node, &self.empty),
        }
    }

    fn release(&mut self, id: u32) {
        self.trie.nodes.set(id, self.empty.clone());
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(action: u32, len: u8) -> Slot {
        Slot::Leaf(Leaf { action, len })
    }

    #[test]
    fn node_round_trips_and_steps() {
        let mut slots = [leaf(0, 0); FANOUT];
        for (s, slot) in slots.iter_mut().enumerate() {
            *slot = match s {
                0..=9 => leaf(3, 17),
                10 | 63 | 64 | 200 | 255 => Slot::Child(s as u32 + 1000),
                11..=62 => leaf(3, 20),
                65..=127 => leaf(3, 20),
                128..=199 => leaf(9, 18),
                _ => leaf(0, 0),
            };
        }
        let node = Node::build(&slots);
        assert_eq!(node.expand(), slots);
        for (s, slot) in slots.iter().enumerate() {
            let want = match *slot {
                Slot::Child(c) => CHILD | c,
                Slot::Leaf(l) => l.action,
            };
            assert_eq!(node.step(s), want, "slot {s}");
        }
        // Runs split on length as well as on action; children interrupt nothing.
        assert_eq!(node.0[field::LENS_AT] - node.0[field::LEAVES_AT], 4);
    }

    #[test]
    fn paint_and_collapse() {
        let mut b = TrieBuilder::new();
        let key = |a: u32| u128::from(a) << 96;
        // 10.1.2.0/24 -> 1, then 10.0.0.0/8 -> 2 underneath it.
        b.paint(
            key(0x0a01_0200),
            24,
            Leaf { action: 1, len: 24 },
            Paint::Insert,
        );
        b.paint(
            key(0x0a00_0000),
            8,
            Leaf { action: 2, len: 8 },
            Paint::Insert,
        );
        assert_eq!(b.lookup(key(0x0a01_0205)), 1);
        assert_eq!(b.lookup(key(0x0a01_0305)), 2);
        assert_eq!(b.lookup(key(0x0b00_0000)), 0);
        assert_eq!(b.footprint().0, 1);
        // Withdraw the /24: its slots fall back to the /8 and the node goes.
        b.paint(
            key(0x0a01_0200),
            24,
            Leaf { action: 2, len: 8 },
            Paint::Remove,
        );
        assert_eq!(b.lookup(key(0x0a01_0205)), 2);
        assert_eq!(b.footprint().0, 0);
        assert_eq!(b.trie.root[0x0a01], 2);
    }

    #[test]
    fn snapshots_are_isolated_from_later_updates() {
        let mut b = TrieBuilder::new();
        let key = |a: u32| u128::from(a) << 96;
        b.paint(
            key(0xc000_0201),
            32,
            Leaf { action: 4, len: 32 },
            Paint::Insert,
        );
        let before = b.snapshot();
        b.paint(
            key(0xc000_0200),
            24,
            Leaf { action: 5, len: 24 },
            Paint::Insert,
        );
        b.paint(
            key(0xc000_0201),
            32,
            Leaf { action: 5, len: 24 },
            Paint::Remove,
        );
        assert_eq!(before.lookup(key(0xc000_0201)), 4);
        assert_eq!(before.lookup(key(0xc000_0202)), 0);
        assert_eq!(b.lookup(key(0xc000_0201)), 5);
        assert_eq!(b.lookup(key(0xc000_0202)), 5);
    }
}
