//! Turning fuzzer bytes into structured values, and damaging valid encodings.
//!
//! The random engine of the CI runs draws unstructured bytes, which almost never survive a
//! decoder's first check. So most targets read their input as a recipe instead: the bytes pick
//! the fields of a well-formed message, the target encodes it, and the remaining bytes pick
//! a few byte-level edits of the encoding. Decoders then see inputs that are nearly valid,
//! which is where their length and bounds checks live. A coverage-guided engine uses the same
//! recipes.

/// A cursor over fuzzer bytes. Running out of input is not an error: every read then answers
/// zero, so every prefix of an input is a valid recipe.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    bytes: &'a [u8],
}

impl<'a> Source<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Source { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What is left of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// The next `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// True about once in `n` draws.
    pub fn one_in(&mut self, n: u8) -> bool {
        n <= 1 || self.u8().is_multiple_of(n)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        if n <= 256 {
            usize::from(self.u8()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    /// Up to `max` bytes, the length taken from the input.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.u8()).collect()
    }

    /// A short string: mostly from a small alphabet (so values repeat and compare equal),
    /// sometimes any UTF-8 the bytes spell.
    pub fn string(&mut self, max: usize) -> String {
        if self.one_in(8) {
            return String::from_utf8_lossy(&self.bytes(max)).into_owned();
        }
        let n = self.below(max + 1);
        (0..n)
            .map(|_| char::from(b"abcxyz019_-=:.\" "[self.below(16)]))
            .collect()
    }

    /// An integer of interesting size: small, near a power of two, or any.
    pub fn interesting_u64(&mut self) -> u64 {
        match self.u8() % 6 {
            0 => u64::from(self.u8()),
            1 => u64::from(self.u16()),
            2 => 1u64.checked_shl(u32::from(self.u8() % 64)).unwrap_or(0),
            3 => u64::MAX - u64::from(self.u8()),
            4 => u64::from(u32::MAX) + u64::from(self.u8()) - 128,
            _ => self.u64(),
        }
    }
}

/// Apply a few byte-level edits chosen by `src` to `data`: flip, overwrite, insert, delete,
/// duplicate a run, truncate, or set a byte to an extreme.
pub fn mutate(data: &mut Vec<u8>, src: &mut Source<'_>) {
    let edits = src.below(4);
    for _ in 0..edits {
        let len = data.len();
        let at = src.below(len.max(1));
        match src.u8() % 8 {
            0 if len > 0 => data[at] ^= 1 << (src.u8() % 8),
            1 if len > 0 => data[at] = src.u8(),
            2 => {
                let b = src.u8();
                data.insert(at.min(len), b);
            }
            3 if len > 0 => {
                let n = src.below(8).min(len - at);
                data.drain(at..at + n);
            }
            4 if len > 0 => {
                let n = src.below(16).min(len - at);
                let run: Vec<u8> = data[at..at + n].to_vec();
                let to = src.below(len + 1);
                data.splice(to..to, run);
            }
            5 => data.truncate(at),
            6 if len > 0 => data[at] = src.pick(&[0x00, 0x7f, 0x80, 0xff]),
            _ => {
                // A varint claiming a huge length or value.
                let to = at.min(len);
                data.splice(to..to, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
}

/// A long recipe from a short input: the random engine draws short inputs (a few hundred
/// bytes at most), too few for a long run of commands. An input whose first byte has its
/// high bit set and that has at least nine bytes stands for `len` bytes of a pseudo-random
/// stream seeded with its next eight; any other input is used as it is.
pub fn expand(input: &[u8], len: usize) -> std::borrow::Cow<'_, [u8]> {
    match input {
        [first, seed @ ..] if first & 0x80 != 0 && seed.len() >= 8 => {
            let mut s = [0u8; 8];
            s.copy_from_slice(&seed[..8]);
            std::borrow::Cow::Owned(stream(u64::from_le_bytes(s), len))
        }
        _ => std::borrow::Cow::Borrowed(input),
    }
}

/// `len` pseudo-random bytes (xorshift64*) from `seed`.
pub fn stream(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}
