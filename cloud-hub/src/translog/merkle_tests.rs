//! The Merkle code against the RFC's own recursive definitions (written
//! here over slices, independently of the range arithmetic), the
//! Certificate Transparency test vectors (the same in Google's C++ CT code
//! and transparency-dev/merkle's `testonly`), and every (index, size) and
//! (first, second) of small trees plus random ones of large trees.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Hash {
    let b: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect();
    b.try_into().expect("32 bytes")
}

/// The CT vectors' leaf inputs.
fn inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    })
    .collect()
}

/// Roots of the first n leaves, n = 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn vector_tree() -> (Vec<Hash>, MemoryTree) {
    let leaves: Vec<Hash> = inputs().iter().map(|e| leaf_hash(e)).collect();
    let mut t = MemoryTree::new();
    for l in &leaves {
        t.push(*l);
    }
    (leaves, t)
}

/// RFC 6962 2.1.1 PATH(m, D[n]), literally.
fn rfc_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = split(d.len() as u64) as usize;
    if m < k {
        let mut p = rfc_path(m, &d[..k]);
        p.push(root_from_leaves(&d[k..]));
        p
    } else {
        let mut p = rfc_path(m - k, &d[k..]);
        p.push(root_from_leaves(&d[..k]));
        p
    }
}

/// RFC 6962 2.1.2 SUBPROOF(m, D[n], b), literally.
fn rfc_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    if m == d.len() {
        return if b {
            Vec::new()
        } else {
            vec![root_from_leaves(d)]
        };
    }
    let k = split(d.len() as u64) as usize;
    if m <= k {
        let mut p = rfc_subproof(m, &d[..k], b);
        p.push(root_from_leaves(&d[k..]));
        p
    } else {
        let mut p = rfc_subproof(m - k, &d[k..], false);
        p.push(root_from_leaves(&d[..k]));
        p
    }
}

#[test]
fn the_empty_tree_is_sha256_of_nothing() {
    assert_eq!(empty_root(), hex(ROOTS[0]));
    assert_eq!(root_from_leaves(&[]), hex(ROOTS[0]));
    assert_eq!(Frontier::new().root(), hex(ROOTS[0]));
    assert_eq!(MemoryTree::new().root(0), Some(hex(ROOTS[0])));
}

#[test]
fn roots_of_the_ct_vectors() {
    let (leaves, tree) = vector_tree();
    let mut f = Frontier::new();
    for n in 1..=8 {
        f.push(leaves[n - 1]);
        assert_eq!(
            root_from_leaves(&leaves[..n]),
            hex(ROOTS[n]),
            "recursive, {n}"
        );
        assert_eq!(f.root(), hex(ROOTS[n]), "frontier, {n}");
        assert_eq!(
            tree.root(n as u64),
            Some(hex(ROOTS[n])),
            "stored nodes, {n}"
        );
    }
}

#[test]
fn inclusion_proofs_of_the_ct_vectors() {
    let (leaves, tree) = vector_tree();
    let cases: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| hex(s)).collect();
        let got = tree.inclusion_proof(index, size).expect("proof");
        assert_eq!(got, want, "PATH({index}, D[{size}])");
        verify_inclusion(
            &leaves[index as usize],
            index,
            size,
            &got,
            &hex(ROOTS[size as usize]),
        )
        .expect("verifies");
    }
}

#[test]
fn consistency_proofs_of_the_ct_vectors() {
    let (_, tree) = vector_tree();
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (m, n, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| hex(s)).collect();
        let got = tree.consistency_proof(m, n).expect("proof");
        assert_eq!(got, want, "PROOF({m}, D[{n}])");
        verify_consistency(m, n, &hex(ROOTS[m as usize]), &hex(ROOTS[n as usize]), &got)
            .expect("verifies");
    }
}

fn tree_of(n: u64) -> (Vec<Hash>, MemoryTree) {
    let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut t = MemoryTree::new();
    for l in &leaves {
        t.push(*l);
    }
    (leaves, t)
}

/// Every (index, size) and (first, second) up to 70 leaves: the stored-node
/// proofs are the RFC's, verify, and fail when one hash, the index, the size
/// or the root is changed.
#[test]
fn every_proof_of_small_trees() {
    let (leaves, tree) = tree_of(70);
    let mut f = Frontier::new();
    for n in 1..=70u64 {
        f.push(leaves[n as usize - 1]);
        let root = root_from_leaves(&leaves[..n as usize]);
        assert_eq!(f.root(), root);
        assert_eq!(tree.root(n), Some(root));
        for i in 0..n {
            let p = tree.inclusion_proof(i, n).expect("proof");
            assert_eq!(p, rfc_path(i as usize, &leaves[..n as usize]), "({i}, {n})");
            let leaf = &leaves[i as usize];
            verify_inclusion(leaf, i, n, &p, &root).expect("verifies");
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][0] ^= 1;
                assert!(verify_inclusion(leaf, i, n, &bad, &root).is_err());
            }
            if n > 1 {
                let other = (i + 1) % n;
                assert!(verify_inclusion(leaf, other, n, &p, &root).is_err());
                assert!(verify_inclusion(&leaves[other as usize], i, n, &p, &root).is_err());
            }
            // (Not checked: the same path under a larger size. For a
            // leading leaf it can fold to the same root, which is why a root
            // is only ever taken with the size signed next to it in an STH.)
            let mut longer = p.clone();
            longer.push(root);
            assert!(verify_inclusion(leaf, i, n, &longer, &root).is_err());
        }
        for m in 0..=n {
            let p = tree.consistency_proof(m, n).expect("proof");
            if m > 0 {
                assert_eq!(p, rfc_subproof(m as usize, &leaves[..n as usize], true));
            }
            let mroot = root_from_leaves(&leaves[..m as usize]);
            verify_consistency(m, n, &mroot, &root, &p).expect("verifies");
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][31] ^= 0x80;
                assert!(verify_consistency(m, n, &mroot, &root, &bad).is_err());
            }
            if m > 0 && m < n {
                let mut forked = mroot;
                forked[0] ^= 1;
                assert!(verify_consistency(m, n, &forked, &root, &p).is_err());
                assert!(verify_consistency(m, n, &mroot, &forked, &p).is_err());
                assert!(verify_consistency(m + 1, n, &mroot, &root, &p).is_err());
            }
        }
    }
    assert_eq!(
        inclusion_ranges(3, 3),
        Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
    );
    assert!(consistency_ranges(4, 3).is_err());
}

#[test]
fn the_frontier_survives_its_byte_form() {
    let (leaves, _) = tree_of(37);
    let mut f = Frontier::new();
    for l in &leaves {
        f.push(*l);
        let back = Frontier::from_bytes(f.size(), &f.to_bytes()).expect("round trip");
        assert_eq!(back, f);
    }
    assert!(Frontier::from_bytes(5, &[0u8; 32]).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random (index, size) and (first, second) in trees of up to 5,000
    /// leaves: proofs verify, a changed hash fails.
    #[test]
    fn random_proofs_in_larger_trees(n in 1u64..5000, a in any::<u64>(), b in any::<u64>(), flip in any::<usize>()) {
        let (leaves, tree) = tree_of(n);
        let root = tree.root(n).expect("root");
        prop_assert_eq!(root, root_from_leaves(&leaves));
        let i = a % n;
        let p = tree.inclusion_proof(i, n).expect("proof");
        prop_assert!(p.len() <= 64 - (n - 1).leading_zeros() as usize);
        verify_inclusion(&leaves[i as usize], i, n, &p, &root).expect("verifies");
        if !p.is_empty() {
            let mut bad = p.clone();
            bad[flip % p.len()][flip % 32] ^= 4;
            prop_assert!(verify_inclusion(&leaves[i as usize], i, n, &bad, &root).is_err());
        }
        let m = b % (n + 1);
        let c = tree.consistency_proof(m, n).expect("proof");
        let mroot = tree.root(m).expect("root");
        verify_consistency(m, n, &mroot, &root, &c).expect("verifies");
        if !c.is_empty() {
            let mut bad = c.clone();
            bad[flip % c.len()][flip % 32] ^= 4;
            prop_assert!(verify_consistency(m, n, &mroot, &root, &bad).is_err());
        }
    }
}

/// Proofs of a tree of 2^40 + 12345 leaves only name perfect subtrees that
/// exist in it (aligned, inside the tree), and at most 2 log2(n) of them.
#[test]
fn ranges_of_a_huge_tree_are_aligned_and_short() {
    let n = (1u64 << 40) + 12345;
    for i in [0, 1, n / 3, n - 12345, n - 1] {
        let r = inclusion_ranges(i, n).expect("ranges");
        assert!(r.len() <= 41);
        for node in nodes_of(&r) {
            let start = node.index << node.level;
            assert!(start + (1u64 << node.level) <= n, "{node:?}");
        }
    }
    let r = consistency_ranges(n / 7, n).expect("ranges");
    assert!(nodes_of(&r).len() <= 2 * 41);
}
