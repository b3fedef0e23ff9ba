//! The memtable's order: an insert-only B+tree of entry ids, sorted by their keys.
//!
//! Keys live elsewhere (the memtable's arena); the tree stores 32-bit entry ids and, next to
//! each, the key's first 16 bytes as a `u128` *head*, so that most comparisons during a search
//! read only the node being searched, and the arena is touched only when two heads are equal.
//! Nodes hold up to 32 keys, are addressed by `u32` index in chunks that never move, and leaves
//! are linked left to right for iteration. Keys are never removed (a memtable deletes with
//! tombstones), which keeps the tree to inserts, splits and seeks.
//!
//! A split divides a full node in half, except on the rightmost path, where keys arrive in
//! ascending order when a sorted stream is loaded: there the full node stays full and the new
//! node starts with the new key, so a sorted load fills nodes completely.

use std::cmp::Ordering;

use super::arena::Chunked;

/// The most keys a node holds.
const FANOUT: usize = 32;

/// "No leaf" in a leaf's `next` link and in a cursor.
pub(super) const NIL: u32 = u32::MAX;

/// What the tree compares: the key of an entry id.
pub(super) trait Keys {
    /// The key of entry `id`.
    fn key(&self, id: u32) -> &[u8];
}

/// The first 16 bytes of `key`, zero-padded, as a number that orders like the bytes.
///
/// Big-endian, in memory only (it never reaches disk): so that comparing two heads as
/// integers compares the bytes. Equal heads say nothing (padding), and the full keys decide.
#[inline]
fn head(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

#[derive(Clone, Copy)]
struct Leaf {
    heads: [u128; FANOUT],
    ids: [u32; FANOUT],
    len: u32,
    /// The leaf to the right, or [`NIL`].
    next: u32,
}

impl Default for Leaf {
    fn default() -> Self {
        Leaf {
            heads: [0; FANOUT],
            ids: [0; FANOUT],
            len: 0,
            next: NIL,
        }
    }
}

/// An inner node: `len` separators and `len + 1` children. Child `i` holds the keys from
/// separator `i - 1` (inclusive) to separator `i` (exclusive); a separator is the least key of
/// the subtree to its right.
#[derive(Clone, Copy)]
struct Inner {
    heads: [u128; FANOUT],
    seps: [u32; FANOUT],
    children: [u32; FANOUT + 1],
    len: u32,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            heads: [0; FANOUT],
            seps: [0; FANOUT],
            children: [0; FANOUT + 1],
            len: 0,
        }
    }
}

/// Compares `key` (with head `h`) to the key of entry `id` (with head `id_head`).
#[inline]
fn compare(keys: &impl Keys, key: &[u8], h: u128, id: u32, id_head: u128) -> Ordering {
    match h.cmp(&id_head) {
        Ordering::Equal => key.cmp(keys.key(id)),
        unequal => unequal,
    }
}

/// The number of entries among the first `len` of (`heads`, `ids`) whose keys are less than
/// `key` (`or_equal`: less than or equal). Binary search; the entries are sorted.
#[inline]
fn rank(
    keys: &impl Keys,
    heads: &[u128],
    ids: &[u32],
    key: &[u8],
    h: u128,
    or_equal: bool,
) -> usize {
    let (mut lo, mut hi) = (0, heads.len().min(ids.len()));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let below = match compare(keys, key, h, ids[mid], heads[mid]) {
            Ordering::Greater => true,
            Ordering::Equal => or_equal,
            Ordering::Less => false,
        };
        if below {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Inserts `value` at `pos` into the first `len` slots of `array` (which has room).
#[inline]
fn insert_at<T: Copy>(array: &mut [T], len: usize, pos: usize, value: T) {
    array.copy_within(pos..len, pos + 1);
    array[pos] = value;
}

/// An insert-only B+tree of entry ids ordered by key.
pub(super) struct BTree {
    leaves: Chunked<Leaf>,
    inners: Chunked<Inner>,
    root: u32,
    /// The number of inner levels above the leaves.
    height: usize,
    /// The inner nodes of the last descent and the child taken in each (reused).
    path: Vec<(u32, usize)>,
}

impl BTree {
    pub(super) fn new() -> Self {
        let mut leaves = Chunked::new();
        let root = leaves.push(Leaf::default());
        BTree {
            leaves,
            inners: Chunked::new(),
            root,
            height: 0,
            path: Vec::new(),
        }
    }

    /// The bytes the tree's nodes hold.
    pub(super) fn reserved(&self) -> usize {
        self.leaves.reserved()
            + self.inners.reserved()
            + self.path.capacity() * std::mem::size_of::<(u32, usize)>()
    }

    /// The leaf `key` belongs in, recording the descent in `path`.
    fn descend(&mut self, keys: &impl Keys, key: &[u8], h: u128) -> u32 {
        self.path.clear();
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = self.inners.get(node);
            let len = inner.len as usize;
            let pos = rank(keys, &inner.heads[..len], &inner.seps[..len], key, h, true);
            self.path.push((node, pos));
            node = inner.children[pos];
        }
        node
    }

    /// Inserts entry `id` with key `key`, which the tree must not hold yet.
    pub(super) fn insert(&mut self, keys: &impl Keys, id: u32, key: &[u8]) {
        let h = head(key);
        let leaf_id = self.descend(keys, key, h);
        let leaf = self.leaves.get_mut(leaf_id);
        let len = leaf.len as usize;
        let pos = rank(keys, &leaf.heads[..len], &leaf.ids[..len], key, h, false);
        if len < FANOUT {
            insert_at(&mut leaf.heads, len, pos, h);
            insert_at(&mut leaf.ids, len, pos, id);
            leaf.len += 1;
            return;
        }
        // Split: the full leaf and the new key make FANOUT + 1 entries.
        let mut heads = [0u128; FANOUT + 1];
        let mut ids = [0u32; FANOUT + 1];
        heads[..FANOUT].copy_from_slice(&leaf.heads);
        ids[..FANOUT].copy_from_slice(&leaf.ids);
        insert_at(&mut heads, FANOUT, pos, h);
        insert_at(&mut ids, FANOUT, pos, id);
        let rightmost = leaf.next == NIL;
        let mid = if rightmost && pos == FANOUT {
            FANOUT
        } else {
            FANOUT.div_ceil(2)
        };
        let mut right = Leaf {
            len: (FANOUT + 1 - mid) as u32,
            next: leaf.next,
            ..Leaf::default()
        };
        right.heads[..FANOUT + 1 - mid].copy_from_slice(&heads[mid..]);
        right.ids[..FANOUT + 1 - mid].copy_from_slice(&ids[mid..]);
        leaf.heads[..mid].copy_from_slice(&heads[..mid]);
        leaf.ids[..mid].copy_from_slice(&ids[..mid]);
        leaf.len = mid as u32;
        let right_id = self.leaves.push(right);
        self.leaves.get_mut(leaf_id).next = right_id;
        self.insert_separator(ids[mid], heads[mid], right_id, rightmost);
    }

    /// Inserts separator `sep` (with head `h`) and the child `right` to its right into the
    /// parents recorded in `path`, splitting them as needed, and grows a new root if the old
    /// one splits.
    fn insert_separator(&mut self, mut sep: u32, mut h: u128, mut right: u32, rightmost: bool) {
        while let Some((node_id, pos)) = self.path.pop() {
            let node = self.inners.get_mut(node_id);
            let len = node.len as usize;
            if len < FANOUT {
                insert_at(&mut node.heads, len, pos, h);
                insert_at(&mut node.seps, len, pos, sep);
                insert_at(&mut node.children, len + 1, pos + 1, right);
                node.len += 1;
                return;
            }
            let mut heads = [0u128; FANOUT + 1];
            let mut seps = [0u32; FANOUT + 1];
            let mut children = [0u32; FANOUT + 2];
            heads[..FANOUT].copy_from_slice(&node.heads);
            seps[..FANOUT].copy_from_slice(&node.seps);
            children[..FANOUT + 1].copy_from_slice(&node.children);
            insert_at(&mut heads, FANOUT, pos, h);
            insert_at(&mut seps, FANOUT, pos, sep);
            insert_at(&mut children, FANOUT + 1, pos + 1, right);
            // Separator `mid` moves up; the left node keeps `mid` of them, the right node the
            // rest. On the rightmost path after an append, the left node stays full.
            let mid = if rightmost && pos == FANOUT {
                FANOUT
            } else {
                FANOUT / 2
            };
            let right_len = FANOUT - mid;
            let mut new = Inner {
                len: right_len as u32,
                ..Inner::default()
            };
            new.heads[..right_len].copy_from_slice(&heads[mid + 1..]);
            new.seps[..right_len].copy_from_slice(&seps[mid + 1..]);
            new.children[..right_len + 1].copy_from_slice(&children[mid + 1..]);
            node.heads[..mid].copy_from_slice(&heads[..mid]);
            node.seps[..mid].copy_from_slice(&seps[..mid]);
            node.children[..mid + 1].copy_from_slice(&children[..mid + 1]);
            node.len = mid as u32;
            (sep, h) = (seps[mid], heads[mid]);
            right = self.inners.push(new);
        }
        // The root split: a new root above it.
        let mut root = Inner {
            len: 1,
            ..Inner::default()
        };
        root.heads[0] = h;
        root.seps[0] = sep;
        root.children[0] = self.root;
        root.children[1] = right;
        self.root = self.inners.push(root);
        self.height += 1;
    }

    /// A cursor at the first entry whose key is at least `key` (`or_equal == false`: greater
    /// than `key`).
    pub(super) fn seek(&self, keys: &impl Keys, key: &[u8], or_equal: bool) -> Cursor {
        let h = head(key);
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = self.inners.get(node);
            let len = inner.len as usize;
            let pos = rank(keys, &inner.heads[..len], &inner.seps[..len], key, h, true);
            node = inner.children[pos];
        }
        let leaf = self.leaves.get(node);
        let len = leaf.len as usize;
        let pos = rank(
            keys,
            &leaf.heads[..len],
            &leaf.ids[..len],
            key,
            h,
            !or_equal,
        );
        Cursor {
            leaf: node,
            pos: pos as u32,
        }
    }

    /// A cursor at the first entry. The leftmost leaf is the first ever made: splits only add
    /// leaves to the right.
    pub(super) fn first(&self) -> Cursor {
        Cursor { leaf: 0, pos: 0 }
    }

    /// The entry id at `cursor` and the cursor after it, or `None` at the end.
    #[inline]
    pub(super) fn next(&self, cursor: Cursor) -> Option<(u32, Cursor)> {
        let Cursor { mut leaf, mut pos } = cursor;
        while leaf != NIL {
            let node = self.leaves.get(leaf);
            if pos < node.len {
                let id = node.ids[pos as usize];
                return Some((id, Cursor { leaf, pos: pos + 1 }));
            }
            (leaf, pos) = (node.next, 0);
        }
        None
    }
}

/// A position in the tree: a leaf and a slot in it (possibly one past its last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    leaf: u32,
    pos: u32,
}

impl Cursor {
    /// The position past every entry.
    pub(super) const END: Cursor = Cursor { leaf: NIL, pos: 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecKeys(Vec<Vec<u8>>);

    impl Keys for VecKeys {
        fn key(&self, id: u32) -> &[u8] {
            &self.0[id as usize]
        }
    }

    /// Up to `limit` ids from `cursor` on.
    fn collect(tree: &BTree, mut cursor: Cursor, limit: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((id, next)) = tree.next(cursor) {
            if out.len() == limit {
                break;
            }
            out.push(id);
            cursor = next;
        }
        out
    }

    fn check(keys: &VecKeys, tree: &BTree) {
        let mut sorted: Vec<u32> = (0..keys.0.len() as u32).collect();
        sorted.sort_by(|&a, &b| keys.key(a).cmp(keys.key(b)));
        assert_eq!(collect(tree, tree.first(), usize::MAX), sorted);
        // Seeks land on the right entry, for present keys and for keys in between (the next
        // few entries are compared: enough to cross leaf boundaries).
        let window = |from: usize| {
            sorted[from.min(sorted.len())..]
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
        };
        for (rank, &id) in sorted.iter().enumerate() {
            let key = keys.key(id);
            assert_eq!(collect(tree, tree.seek(keys, key, true), 3), window(rank));
            assert_eq!(
                collect(tree, tree.seek(keys, key, false), 3),
                window(rank + 1)
            );
            let mut after = key.to_vec();
            after.push(0);
            // The key plus a zero byte sorts right after the key: before every longer key.
            assert_eq!(
                collect(tree, tree.seek(keys, &after, true), 3),
                window(rank + 1)
            );
        }
        assert_eq!(tree.next(Cursor::END), None);
    }

    fn build(keys: Vec<Vec<u8>>) -> (VecKeys, BTree) {
        let keys = VecKeys(keys);
        let mut tree = BTree::new();
        for (id, key) in keys.0.iter().enumerate() {
            tree.insert(&keys, id as u32, key);
        }
        (keys, tree)
    }

    #[test]
    fn random_order_inserts() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let keys: Vec<Vec<u8>> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Long shared prefixes, so that heads tie and full keys decide.
                let mut k = vec![0xab; (x % 24) as usize];
                k.extend_from_slice(&x.to_be_bytes()[..(x >> 61) as usize + 1]);
                k
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>();
        let mut shuffled = keys;
        let n = shuffled.len();
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (keys, tree) = build(shuffled);
        assert!(tree.height >= 2, "height {}", tree.height);
        check(&keys, &tree);
    }

    #[test]
    fn ascending_inserts_fill_nodes() {
        let keys: Vec<Vec<u8>> = (0..40_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let (keys, tree) = build(keys);
        check(&keys, &tree);
        // Full leaves: 40 000 / 32 = 1 250.
        assert_eq!(tree.leaves.len(), 40_000 / FANOUT);
        let (keys, tree) = build(keys.0.into_iter().rev().collect());
        check(&keys, &tree);
    }

    #[test]
    fn empty_and_tiny_trees() {
        let (keys, tree) = build(Vec::new());
        check(&keys, &tree);
        assert_eq!(tree.next(tree.seek(&keys, b"x", true)), None);
        let (keys, tree) = build(vec![b"\0".to_vec(), b"".to_vec(), b"\0\0\0".to_vec()]);
        check(&keys, &tree);
    }
}
