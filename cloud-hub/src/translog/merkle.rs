//! RFC 6962 / RFC 9162 (section 2.1) Merkle trees, pure: no I/O, no
//! database, so the offline verifier (`cloud-hub certificate verify`) and
//! anyone else can use it.
//!
//! - leaf hash: SHA-256(0x00 || entry)
//! - node hash: SHA-256(0x01 || left || right)
//! - MTH of n > 1 leaves: node hash of MTH(D[0:k]) and MTH(D[k:n]), k the
//!   largest power of two < n; MTH of no leaves: SHA-256 of the empty string.
//!
//! Storage works in *perfect subtrees* ([`NodeId`]: level L, index k covers
//! leaves [k*2^L, (k+1)*2^L)). Every subtree the RFC's recursion names is a
//! perfect subtree, or (at the right edge of the tree) a run of perfect
//! subtrees of decreasing size; so a proof is a list of leaf ranges
//! ([`inclusion_ranges`], [`consistency_ranges`]), each the hash of a few
//! stored perfect subtrees ([`range_nodes`]). The verifiers are the RFC 9162
//! 2.1.3.2 and 2.1.4.2 algorithms, written from the text.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof or a request for one is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("a consistency proof needs first <= second; got {first} > {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has {got} hashes; a proof for these sizes has {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("a hash the proof needs is missing from the log ({0:?})")]
    MissingNode(NodeId),
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of an entry: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// An interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH of a list of leaf hashes, by the RFC's recursive definition (the
/// reference the faster paths are tested against).
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(
                &root_from_leaves(&leaves[..k]),
                &root_from_leaves(&leaves[k..]),
            )
        }
    }
}

/// A perfect subtree: leaves [index * 2^level, (index + 1) * 2^level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// The perfect subtrees whose hashes make MTH(D[lo:hi]), left to right,
/// largest first. `lo` must be aligned as in the RFC's recursion (every
/// range [`inclusion_ranges`] and [`consistency_ranges`] return is).
pub fn range_nodes(mut lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    while lo < hi {
        let s = hi - lo;
        let k = if s.is_power_of_two() { s } else { split(s) };
        let level = k.trailing_zeros() as u8;
        debug_assert_eq!(lo % k, 0, "range [{lo}, {hi}) is not aligned");
        out.push(NodeId {
            level,
            index: lo >> level,
        });
        lo += k;
    }
    out
}

/// The hash of a range from its perfect subtrees' hashes (as
/// [`range_nodes`] lists them): folded from the right, as the RFC's
/// recursion nests them.
pub fn fold_range(hashes: &[Hash]) -> Hash {
    let mut it = hashes.iter().rev();
    let Some(last) = it.next() else {
        return empty_root();
    };
    it.fold(*last, |right, left| node_hash(left, &right))
}

/// The leaf ranges whose MTHs make the audit path of leaf `index` in the
/// tree of `size` leaves (RFC 6962 2.1.1 PATH), from the leaf up.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index - lo < k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The leaf ranges whose MTHs make the consistency proof between the trees
/// of `first` and `second` leaves (RFC 6962 2.1.2 PROOF / SUBPROOF). Empty
/// when first is 0 (the empty tree is a prefix of every tree) or equals
/// second.
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut out = Vec::new();
    if first == 0 || first == second {
        return Ok(out);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled; `m` counts leaves from `lo`.
    let (mut m, mut lo, mut hi, mut b) = (first, 0u64, second, true);
    while m != hi - lo {
        let k = split(hi - lo);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            m -= k;
            lo += k;
            b = false;
        }
    }
    if !b {
        out.push((lo, hi));
    }
    out.reverse();
    Ok(out)
}

/// Every perfect subtree the given ranges need, sorted, without repeats:
/// what a store fetches to answer a proof.
pub fn nodes_of(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ranges
        .iter()
        .flat_map(|&(lo, hi)| range_nodes(lo, hi))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A proof's hashes from its ranges, looking perfect subtrees up in `node`.
pub fn assemble(
    ranges: &[(u64, u64)],
    mut node: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            let hashes = range_nodes(lo, hi)
                .into_iter()
                .map(|id| node(id).ok_or(ProofError::MissingNode(id)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(fold_range(&hashes))
        })
        .collect()
}

/// The root an audit path leads to (RFC 9162 2.1.3.2, steps 1-5).
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    let expected = inclusion_ranges(index, size)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::RootMismatch);
    }
    Ok(r)
}

/// Checks that the leaf with hash `leaf` is at `index` in the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `first` leaves with root `first_root` is a
/// prefix of the tree of `second` leaves with root `second_root` (RFC 9162
/// 2.1.4.2). Equal sizes need an empty proof and equal roots; the empty
/// tree (first = 0) is a prefix of every tree, with an empty proof.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let expected = consistency_ranges(first, second)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if first == 0 {
        return Ok(());
    }
    if first == second {
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // Step 1: a first tree that is a perfect subtree is its own first hash.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr == *first_root && sr == *second_root && snode == 0 {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of a tree: the hashes of the perfect subtrees covering
/// leaves [0, size), largest first (one per set bit of `size`). Enough to
/// append a leaf and to compute the root without reading anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// From stored bytes (the hashes concatenated); None when they do not
    /// fit `size` (one 32-byte hash per set bit).
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().ok())
            .collect::<Option<Vec<Hash>>>()?;
        Some(Frontier { size, hashes })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtrees of the frontier, largest first.
    pub fn nodes(&self) -> Vec<NodeId> {
        range_nodes(0, self.size)
    }

    /// Appends a leaf; returns the perfect subtrees of level >= 1 it
    /// completed (what a store keeps for proofs), lowest first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut done = Vec::new();
        let mut h = leaf;
        let mut index = self.size;
        let mut level = 0u8;
        // A set low bit of the old size means a subtree of that level waits
        // for its right sibling: carry like a binary counter.
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().unwrap_or_else(empty_root);
            h = node_hash(&left, &h);
            level += 1;
            index >>= 1;
            done.push((NodeId { level, index }, h));
        }
        self.hashes.push(h);
        self.size += 1;
        done
    }

    /// MTH of the leaves appended so far.
    pub fn root(&self) -> Hash {
        fold_range(&self.hashes)
    }
}

/// A whole tree in memory: every perfect subtree's hash by level. For
/// tests, the benchmark's checks, and small verifiers.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let n = self.levels[level].len();
            if n % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][n - 2], &h);
            level += 1;
        }
    }

    pub fn node(&self, id: NodeId) -> Option<Hash> {
        self.levels
            .get(usize::from(id.level))?
            .get(usize::try_from(id.index).ok()?)
            .copied()
    }

    /// MTH of the first `size` leaves.
    pub fn root(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        assemble(&[(0, size)], |id| self.node(id))
            .ok()
            .map(|v| v.first().copied().unwrap_or_else(empty_root))
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: size,
                size: self.size() + 1,
            });
        }
        assemble(&inclusion_ranges(index, size)?, |id| self.node(id))
    }

    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        if second > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: second,
                size: self.size() + 1,
            });
        }
        assemble(&consistency_ranges(first, second)?, |id| self.node(id))
    }
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
