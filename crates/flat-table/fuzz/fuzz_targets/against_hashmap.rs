//! Builds a table and changes it as the input says (keys set, replaced and
//! removed, in batches), doing the same to a `HashMap`; after each batch every
//! key the map has is found with its value, and keys it lacks are not found,
//! in the new table and, unchanged, in the one before. Hashes keep only the
//! bits the input's first byte chooses, so that keys collide, probes run long
//! and wrap around the end of the table.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use slum_flat_table::FlatTable;

/// A key's hash: a mixed value with only `mask`'s bits kept.
fn hash(key: u8, mask: u64) -> u64 {
    (u64::from(key) + 1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
        & mask
}

fn check(table: &FlatTable<(u8, u16)>, model: &HashMap<u8, u16>, mask: u64) {
    assert_eq!(table.len(), model.len());
    assert!(table.is_empty() || table.slots() * 5 >= table.len() * 14);
    for key in 0..=u8::MAX {
        let found = table.find(hash(key, mask), |e| e.0 == key).map(|e| e.1);
        assert_eq!(found, model.get(&key).copied(), "key {key}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&bits, ops)) = data.split_first() else {
        return;
    };
    // All of the hash, or a few of its low bits (its place) and of its top.
    let mask = match bits % 4 {
        0 => u64::MAX,
        1 => 0x3,
        2 => 0xff00_0000_0000_000f,
        _ => 0,
    };
    let mut model: HashMap<u8, u16> = HashMap::new();
    let mut table: FlatTable<(u8, u16)> = FlatTable::default();
    // Batches of operations, each three bytes: key, then a value whose
    // top bit says remove.
    for batch in ops.chunks(3 * 8) {
        let before = table.clone();
        let model_before = model.clone();
        let mut batch_model: HashMap<u8, Option<u16>> = HashMap::new();
        for op in batch.chunks_exact(3) {
            let value = u16::from_le_bytes([op[1], op[2]]);
            let set = (value & 0x8000 == 0).then_some(value);
            batch_model.insert(op[0], set);
        }
        let added: Vec<(u64, (u8, u16))> = batch_model
            .iter()
            .filter_map(|(&k, v)| v.map(|v| (hash(k, mask), (k, v))))
            .collect();
        let (changed, removed) = table.with(
            |e| batch_model.contains_key(&e.0),
            added,
            |e| hash(e.0, mask),
        );
        table = changed;
        let taken_out = batch_model.keys().filter(|k| model.contains_key(k)).count();
        assert_eq!(removed, taken_out);
        for (k, v) in batch_model {
            match v {
                Some(v) => model.insert(k, v),
                None => model.remove(&k),
            };
        }
        check(&table, &model, mask);
        check(&before, &model_before, mask);
    }
});
