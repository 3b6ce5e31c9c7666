//! A compact name index for a users file kept in memory as its own text: each user is a
//! 16-byte [`Entry`] (where its line is) and a 4-byte slot in an open-addressing table, so a
//! million users cost about 30 MB beside the text instead of hundreds of bytes each. The
//! hasher is std's keyed SipHash, so crafted user names cannot force collisions.

use std::hash::BuildHasher;

/// Where one user's line is in the text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Byte offset of the line.
    pub start: u64,
    /// Length of the line without its CR/LF.
    pub len: u32,
    /// Length of the user name (the line starts with it).
    pub name_len: u32,
    /// 1-based line number.
    pub line: u32,
}

/// Open addressing with linear probing over entry numbers (+1; 0 = empty), at most half
/// full.
#[derive(Debug, Default)]
pub(super) struct NameIndex {
    slots: Vec<u32>,
    hasher: std::hash::RandomState,
}

impl NameIndex {
    /// An index with room for `expected` names.
    pub(super) fn with_capacity(expected: usize) -> NameIndex {
        let size = (expected.max(4) * 2).next_power_of_two();
        NameIndex {
            slots: vec![0; size],
            hasher: std::hash::RandomState::new(),
        }
    }

    fn first_slot(&self, name: &[u8]) -> usize {
        (self.hasher.hash_one(name) as usize) & (self.slots.len() - 1)
    }

    /// The entry number of `name`, given a way to read an entry's name.
    pub(super) fn find<'a>(&self, name: &[u8], name_of: impl Fn(u32) -> &'a [u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.first_slot(name);
        loop {
            match self.slots[at] {
                0 => return None,
                n if name_of(n - 1) == name => return Some(n - 1),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Adds entry number `entry` under `name`, or returns the entry already there.
    pub(super) fn insert<'a>(&mut self, name: &[u8], entry: u32, name_of: impl Fn(u32) -> &'a [u8]) -> Result<(), u32> {
        let mask = self.slots.len() - 1;
        let mut at = self.first_slot(name);
        loop {
            match self.slots[at] {
                0 => {
                    self.slots[at] = entry + 1;
                    return Ok(());
                }
                n if name_of(n - 1) == name => return Err(n - 1),
                _ => at = (at + 1) & mask,
            }
        }
    }
}
