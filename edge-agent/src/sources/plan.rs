//! Turns a profile's points into the register reads that cover them.

use device_profile::{Point, RegisterKind};

/// One Modbus read and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub kind: RegisterKind,
    pub start: u16,
    pub count: u16,
    /// Indexes into the profile's `points`.
    pub points: Vec<usize>,
}

/// Groups points of the same register kind into the fewest reads of at most
/// `max_registers` registers, bridging gaps of up to `max_gap` unused
/// registers (reading a few spare registers is cheaper than a second request).
pub fn plan_reads(points: &[Point], max_registers: u16, max_gap: u16) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].register, points[i].address));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in order {
        let p = &points[i];
        let (start, end) = (u32::from(p.address), p.end_address());
        if let Some(b) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count) - 1;
            let fits = b.kind == p.register
                && start > b_end
                && start - b_end - 1 <= u32::from(max_gap)
                && end - u32::from(b.start) < u32::from(max_registers);
            if fits {
                b.count = (end - u32::from(b.start) + 1) as u16;
                b.points.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock {
            kind: p.register,
            start: p.address,
            count: p.data_type.registers(),
            points: vec![i],
        });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_profile::Profile;
    use std::path::Path;

    fn sdm630() -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-profiles");
        Profile::load_by_id(&dir, "eastron-sdm630").unwrap()
    }

    #[test]
    fn covers_every_point_once_within_limits() {
        let p = sdm630();
        for (max, gap) in [(80, 0), (4, 0), (2, 0), (125, 100), (10, 3)] {
            let blocks = plan_reads(&p.points, max, gap);
            let mut seen: Vec<usize> = blocks.iter().flat_map(|b| b.points.clone()).collect();
            seen.sort();
            assert_eq!(seen, (0..p.points.len()).collect::<Vec<_>>());
            for b in &blocks {
                assert!(b.count <= max, "{b:?} exceeds {max}");
                for &i in &b.points {
                    let pt = &p.points[i];
                    assert_eq!(pt.register, b.kind);
                    assert!(pt.address >= b.start);
                    assert!(pt.end_address() < u32::from(b.start) + u32::from(b.count));
                }
            }
        }
    }

    #[test]
    fn merges_adjacent_registers() {
        let p = sdm630();
        let blocks = plan_reads(&p.points, 80, 0);
        // 0x00..0x0D contiguous; 0x34; 0x46..0x4B; 0x156; holding 0xFC00.
        assert_eq!(
            blocks
                .iter()
                .map(|b| (b.start, b.count))
                .collect::<Vec<_>>(),
            vec![(0, 14), (0x34, 2), (0x46, 6), (0x156, 2), (0xFC00, 2)]
        );
    }
}
