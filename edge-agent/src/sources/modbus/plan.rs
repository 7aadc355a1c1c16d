//! Turns a profile's points into the register reads that cover them.

use device_profile::{Point, RegisterKind};

/// One Modbus read and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub kind: RegisterKind,
    pub start: u16,
    /// Registers, or bits for coils and discrete inputs.
    pub count: u16,
    /// Indexes into the profile's `points`.
    pub points: Vec<usize>,
}

/// Limits a plan must respect.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Unused registers (or bits) a read may span to merge two runs of points.
    pub gap_tolerance: u16,
}

/// Groups `selected` points (indexes into `points`, all Modbus points) into
/// the fewest reads: same register kind, sorted by address, merged while the
/// block stays within the kind's limit and the gap between runs is within
/// tolerance. Bit points of one register share it. No block touches an
/// `avoid` span (kind, first, last address): registers the device refuses.
pub fn plan_reads(
    points: &[Point],
    selected: &[usize],
    limits: PlanLimits,
    avoid: &[(RegisterKind, u32, u32)],
) -> Vec<ReadBlock> {
    let mut order: Vec<(RegisterKind, u16, u32, usize)> = selected
        .iter()
        .filter_map(|&i| {
            points[i]
                .modbus()
                .map(|l| (l.register, l.address, l.end_address(), i))
        })
        .collect();
    order.sort();
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for (kind, address, end, i) in order {
        let start = u32::from(address);
        let limit = u32::from(if kind.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        });
        if let Some(b) = blocks.last_mut()
            && b.kind == kind
        {
            let b_start = u32::from(b.start);
            let b_end = b_start + u32::from(b.count) - 1;
            let new_end = b_end.max(end);
            let gap_ok = start <= b_end + 1 + u32::from(limits.gap_tolerance);
            let clear = !avoid
                .iter()
                .any(|&(k, a0, a1)| k == kind && a0 <= new_end && a1 >= b_start);
            if gap_ok && clear && new_end - b_start < limit {
                b.count = (new_end - b_start + 1) as u16;
                b.points.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock {
            kind,
            start: address,
            count: (end - start + 1) as u16,
            points: vec![i],
        });
    }
    blocks
}

/// Requests one full poll of a Modbus profile takes with its own limits and
/// gap tolerance, and without coalescing (one request per point).
pub fn requests_per_cycle(profile: &device_profile::Profile) -> (usize, usize) {
    let d = profile.modbus_defaults();
    let limits = PlanLimits {
        max_registers: d.max_registers_per_read,
        max_bits: d.max_bits_per_read,
        gap_tolerance: d.gap_tolerance,
    };
    let mut by_group: std::collections::BTreeMap<Option<&str>, Vec<usize>> = Default::default();
    for (i, p) in profile.points.iter().enumerate() {
        by_group.entry(p.poll_group.as_deref()).or_default().push(i);
    }
    let with = by_group
        .values()
        .map(|pts| plan_reads(&profile.points, pts, limits, &[]).len())
        .sum();
    (with, profile.points.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_profile::Profile;
    use proptest::prelude::*;
    use std::path::Path;

    fn sdm630() -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
        Profile::load_by_id(&dir, "eastron-sdm630").unwrap()
    }

    fn all(p: &Profile) -> Vec<usize> {
        (0..p.points.len()).collect()
    }

    fn check_plan(points: &[Point], selected: &[usize], limits: PlanLimits, blocks: &[ReadBlock]) {
        let mut seen: Vec<usize> = blocks.iter().flat_map(|b| b.points.clone()).collect();
        seen.sort();
        let mut want = selected.to_vec();
        want.sort();
        assert_eq!(seen, want, "every point exactly once");
        for b in blocks {
            let limit = if b.kind.is_bits() {
                limits.max_bits
            } else {
                limits.max_registers
            };
            assert!(b.count >= 1 && b.count <= limit, "{b:?} exceeds {limit}");
            assert!(u32::from(b.start) + u32::from(b.count) <= 0x1_0000);
            for &i in &b.points {
                let l = points[i].modbus().unwrap();
                assert_eq!(l.register, b.kind);
                assert!(l.address >= b.start);
                assert!(l.end_address() < u32::from(b.start) + u32::from(b.count));
            }
        }
    }

    #[test]
    fn merges_adjacent_registers() {
        let p = sdm630();
        let lim = PlanLimits {
            max_registers: 80,
            max_bits: 2000,
            gap_tolerance: 0,
        };
        let blocks = plan_reads(&p.points, &all(&p), lim, &[]);
        // 0x00..0x0D contiguous; 0x34; 0x46..0x4B; 0x156; holding 0xFC00.
        assert_eq!(
            blocks
                .iter()
                .map(|b| (b.start, b.count))
                .collect::<Vec<_>>(),
            vec![(0, 14), (0x34, 2), (0x46, 6), (0x156, 2), (0xFC00, 2)]
        );
        check_plan(&p.points, &all(&p), lim, &blocks);
    }

    #[test]
    fn gap_tolerance_bridges_small_holes_only() {
        let p = sdm630();
        let lim = PlanLimits {
            max_registers: 80,
            max_bits: 2000,
            gap_tolerance: 40,
        };
        let blocks = plan_reads(&p.points, &all(&p), lim, &[]);
        // 0x0E..0x33 (38 registers) and 0x36..0x45 (16) bridged: 0..0x4B in one read of 76.
        assert_eq!(
            blocks
                .iter()
                .map(|b| (b.start, b.count))
                .collect::<Vec<_>>(),
            vec![(0, 76), (0x156, 2), (0xFC00, 2)]
        );
        check_plan(&p.points, &all(&p), lim, &blocks);
    }

    #[test]
    fn never_bridges_over_an_avoided_span() {
        let p = sdm630();
        let lim = PlanLimits {
            max_registers: 80,
            max_bits: 2000,
            gap_tolerance: 40,
        };
        // current_l2 (registers 8-9) refused: neither it nor a bridge may cover them.
        let sel: Vec<usize> = all(&p)
            .into_iter()
            .filter(|&i| p.points[i].name != "current_l2")
            .collect();
        let blocks = plan_reads(&p.points, &sel, lim, &[(RegisterKind::Input, 8, 9)]);
        for b in &blocks {
            let end = u32::from(b.start) + u32::from(b.count) - 1;
            assert!(
                !(b.kind == RegisterKind::Input && u32::from(b.start) <= 9 && end >= 8),
                "{b:?}"
            );
        }
        check_plan(&p.points, &sel, lim, &blocks);
    }

    #[test]
    fn refused_registers_in_a_gap_split_the_bridge_there_only() {
        let p = sdm630();
        let lim = PlanLimits {
            max_registers: 80,
            max_bits: 2000,
            gap_tolerance: 40,
        };
        // Registers 32 and 33 (in the 0x0E..0x33 gap) refused: the reads left and
        // right of them still bridge what they can; 4 reads are the fewest possible.
        let avoid = [(RegisterKind::Input, 32, 32), (RegisterKind::Input, 33, 33)];
        let blocks = plan_reads(&p.points, &all(&p), lim, &avoid);
        assert_eq!(
            blocks
                .iter()
                .map(|b| (b.start, b.count))
                .collect::<Vec<_>>(),
            vec![(0, 14), (0x34, 24), (0x156, 2), (0xFC00, 2)]
        );
        check_plan(&p.points, &all(&p), lim, &blocks);
    }

    fn arb_points() -> impl Strategy<Value = Vec<Point>> {
        // Non-overlapping points of random kinds, types and gaps.
        prop::collection::vec((0u8..4, 0u8..5, 0u16..20), 1..80).prop_map(|specs| {
            let mut next = [0u32; 4];
            let mut out = Vec::new();
            for (n, (kind, ty, gap)) in specs.into_iter().enumerate() {
                let k = kind as usize;
                let (register, dtype, size) = match kind {
                    0 => ("coil", "bool", 1),
                    1 => ("discrete", "bool", 1),
                    _ => {
                        let (t, s) = [("u16", 1), ("f32", 2), ("i32", 2), ("f64", 4), ("u16", 1)][ty as usize];
                        (if kind == 2 { "input" } else { "holding" }, t, s)
                    }
                };
                let addr = next[k] + u32::from(gap);
                if addr + size > 0xFFFF {
                    continue;
                }
                next[k] = addr + size;
                let text = format!(
                    "name = \"p{n}\"\nregister = \"{register}\"\naddress = {addr}\ntype = \"{dtype}\"\n"
                );
                out.push(toml::from_str::<Point>(&text).unwrap());
            }
            out
        })
    }

    proptest! {
        #[test]
        fn plan_never_exceeds_limits_and_covers_each_point_once(
            points in arb_points(),
            max_registers in 4u16..=125,
            max_bits in 1u16..=2000,
            gap_tolerance in 0u16..30,
            keep in prop::collection::vec(any::<bool>(), 80),
        ) {
            let selected: Vec<usize> = (0..points.len()).filter(|&i| keep[i] || i % 3 == 0).collect();
            let lim = PlanLimits { max_registers, max_bits, gap_tolerance };
            let blocks = plan_reads(&points, &selected, lim, &[]);
            check_plan(&points, &selected, lim, &blocks);
            // Never more reads than points, and no merge opportunity left on the table
            // for contiguous points.
            prop_assert!(blocks.len() <= selected.len().max(1));
        }
    }
}
