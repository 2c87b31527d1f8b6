//! The read plan: a register map batched into the fewest read requests it allows. Entries of
//! one table whose ranges touch or overlap share a request, up to the protocol's limit
//! (125 registers, 2000 bits); gaps are never read across (a device may refuse those addresses).

use super::registers::{RegisterSpec, Table};

/// One read request and the map entries it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    /// Indexes into the register map.
    pub entries: Vec<usize>,
}

/// Batches `specs` into requests, in table then address order.
pub fn plan(specs: &[RegisterSpec]) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| (specs[i].table, specs[i].address, specs[i].count));
    let mut out: Vec<ReadRequest> = Vec::new();
    for i in order {
        let s = &specs[i];
        let start = u32::from(s.address);
        let end = start + u32::from(s.count);
        if let Some(last) = out.last_mut() {
            let last_start = u32::from(last.address);
            let last_end = last_start + u32::from(last.count);
            let merged_end = end.max(last_end);
            if last.table == s.table
                && start <= last_end
                && merged_end - last_start <= u32::from(s.table.max_per_request())
            {
                last.count = (merged_end - last_start) as u16;
                last.entries.push(i);
                continue;
            }
        }
        out.push(ReadRequest {
            table: s.table,
            address: s.address,
            count: s.count,
            entries: vec![i],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Report;
    use crate::modbus::registers::{DataType, Order};
    use proptest::prelude::*;

    fn reg(table: Table, address: u16, count: u16) -> RegisterSpec {
        RegisterSpec {
            key: format!("{table:?}{address}"),
            table,
            address,
            data_type: if table.is_bits() {
                DataType::Bool
            } else {
                DataType::String
            },
            count,
            bit: None,
            byte_order: Order::Big,
            word_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            report: Report::Always,
            deadband: 0.0,
        }
    }

    #[test]
    fn contiguous_ranges_share_a_request() {
        let specs = vec![
            reg(Table::Holding, 4, 2),
            reg(Table::Holding, 0, 2),
            reg(Table::Holding, 2, 2),
            reg(Table::Holding, 10, 1),
            reg(Table::Coil, 0, 1),
            reg(Table::Coil, 1, 1),
            reg(Table::Holding, 3, 1), // overlaps: a bit field in a register already read
        ];
        let p = plan(&specs);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!((p[0].table, p[0].address, p[0].count), (Table::Coil, 0, 2));
        assert_eq!((p[1].address, p[1].count, p[1].entries.len()), (0, 6, 4));
        assert_eq!((p[2].address, p[2].count), (10, 1));
    }

    #[test]
    fn limits_split_requests() {
        let specs: Vec<_> = (0..130).map(|a| reg(Table::Input, a, 1)).collect();
        let p = plan(&specs);
        assert_eq!(p.iter().map(|r| r.count).collect::<Vec<_>>(), vec![125, 5]);
        let specs: Vec<_> = (0..2001).map(|a| reg(Table::DiscreteInput, a, 1)).collect();
        assert_eq!(plan(&specs).len(), 2);
    }

    proptest! {
        /// Every entry lies inside its one request; no request passes the limit.
        #[test]
        fn requests_cover_every_entry(entries in proptest::collection::vec((0..4usize, 0u16..300, 1u16..6), 0..60)) {
            let tables = [Table::Coil, Table::DiscreteInput, Table::Holding, Table::Input];
            let specs: Vec<_> = entries.iter().map(|&(t, a, c)| {
                let t = tables[t];
                reg(t, a, if t.is_bits() { 1 } else { c })
            }).collect();
            let p = plan(&specs);
            let mut seen = vec![0; specs.len()];
            for r in &p {
                prop_assert!(r.count <= r.table.max_per_request());
                for &i in &r.entries {
                    seen[i] += 1;
                    let s = &specs[i];
                    prop_assert_eq!(s.table, r.table);
                    prop_assert!(s.address >= r.address);
                    prop_assert!(u32::from(s.address) + u32::from(s.count) <= u32::from(r.address) + u32::from(r.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
