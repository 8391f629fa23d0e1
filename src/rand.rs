//! A small, fast, non-cryptographic random source for balancing decisions and
//! request IDs (wyrand, one state per thread).

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    // Mix in the thread's stack address so threads started together differ.
    let addr = &local as *const u8 as u64;
    mix(t ^ addr.rotate_left(32) ^ std::process::id() as u64)
}

/// splitmix64 finaliser: a good 64-bit mixing function.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks in `0..n` from a fixed xorshift sequence, the same on every run:
/// for tests that walk many generated inputs reproducibly.
#[cfg(test)]
pub(crate) fn seeded(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

pub fn u64() -> u64 {
    STATE.with(|s| {
        let v = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(v);
        let t = (v as u128).wrapping_mul((v ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// Uniform in `0..n` (n > 0).
pub fn below(n: u64) -> u64 {
    ((u64() as u128 * n as u128) >> 64) as u64
}

/// Uniform in [0, 1).
pub fn unit() -> f64 {
    (u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A stable 64-bit hash of bytes (FNV-1a, then mixed): the same on every node and
/// across restarts, which consistent hashing needs.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}
