//! The xorshift64 generator of the unit tests' random inputs (the same
//! sequence on every run, no dependency).

/// Marsaglia's xorshift64 (13, 7, 17); the state must not be 0.
pub(crate) struct Xorshift(pub(crate) u64);

impl Xorshift {
    /// The next 64 bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A uniform value in `[0, 1)`, from the top 53 bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
