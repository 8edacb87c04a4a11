//! A small deterministic generator (xorshift64*) and a byte mutator, so property tests and the
//! suite's fuzz driver repeat a failing run from its seed, with no dependency.

/// xorshift64*. A zero seed is replaced (xorshift never leaves zero).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index into a collection of `len` items (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// Values that sit on the edges parsers get wrong, as little-endian integers of 1, 2, 4 or 8
/// bytes.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Text that sits on the edges of the text formats (YAML, JSON, XML, KEY=VALUE, durations).
const TOKENS: &[&[u8]] = &[
    b"-1",
    b"0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"1e999",
    b"NaN",
    b"\"",
    b"\\",
    b"\n",
    b"\0",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b": ",
    b"- ",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"<",
    b"/>",
    b"&#x0;",
    b"=",
    b"%",
    b"\xff\xfe",
    b"\xc3",
    b"null",
    b"true",
];

/// One to eight random edits of `input`, `other` giving splice material: bit flips, edge
/// values over bytes or words, deletions, duplications, inserted tokens, splices.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.index(b.len() + 1);
        match rng.below(8) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 if at < b.len() => b[at] = INTERESTING[rng.index(5)] as u8,
            2 => {
                let width = 1usize << rng.below(4);
                if at + width <= b.len() {
                    let v = INTERESTING[rng.index(INTERESTING.len())].to_le_bytes();
                    b[at..at + width].copy_from_slice(&v[..width]);
                }
            }
            3 if at < b.len() => {
                let len = 1 + rng.index((b.len() - at).min(64));
                b.drain(at..at + len);
            }
            4 if at < b.len() => {
                let len = 1 + rng.index((b.len() - at).min(64));
                let piece = b[at..at + len].to_vec();
                b.splice(at..at, piece);
            }
            5 => {
                let token = TOKENS[rng.index(TOKENS.len())];
                b.splice(at..at, token.iter().copied());
            }
            6 if !other.is_empty() => {
                let from = rng.index(other.len());
                let len = 1 + rng.index((other.len() - from).min(256));
                b.splice(at..at, other[from..from + len].iter().copied());
            }
            7 => b.truncate(at),
            _ => b.insert(at, rng.below(256) as u8),
        }
    }
    b.truncate(max_len);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(
                mutate(&mut a, b"hello: world", b"other", 1 << 16),
                mutate(&mut b, b"hello: world", b"other", 1 << 16)
            );
        }
    }

    #[test]
    fn mutants_differ_from_their_input_and_respect_the_length_cap() {
        let mut rng = Rng::new(1);
        let changed = (0..200)
            .filter(|_| {
                let m = mutate(&mut rng, b"0123456789abcdef", b"xyz", 20);
                assert!(m.len() <= 20);
                m != b"0123456789abcdef"
            })
            .count();
        assert!(
            changed > 150,
            "only {changed} of 200 mutants changed anything"
        );
    }

    #[test]
    fn a_zero_seed_still_generates() {
        let mut rng = Rng::new(0);
        assert_ne!(rng.next_u64(), 0);
    }
}
