//! Next-token choice on the host (docs/spec.md §5.3, `MetaModel.sample_top_p`): argmax at
//! temperature 0; otherwise softmax(logits / T), keep the smallest prefix of the
//! sorted distribution whose mass reaches top-p (the token that crosses it is kept),
//! renormalise and draw with a seeded generator.

/// Temperatures below this sample greedily: `logits / T` would overflow f32 for tiny T,
/// and at this temperature a logit gap of 0.01 already gives odds of e^100 to 1.
pub const GREEDY_BELOW: f32 = 1e-4;

/// xoshiro256** seeded through splitmix64: the same stream on every target.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    state: [u64; 4],
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self { temperature, top_p, state: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether every draw is the argmax (so it can be taken on the device).
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_BELOW
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature < GREEDY_BELOW {
            return argmax(logits);
        }
        let scaled: Vec<f32> = logits.iter().map(|l| l / self.temperature).collect();
        if !scaled.iter().all(|l| l.is_finite()) {
            return argmax(logits); // logits / T overflowed f32: only the top token survives
        }
        let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scaled.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut order: Vec<usize> = (0..exp.len()).collect();
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
        let mut kept = Vec::new();
        let mut cum = 0.0f32;
        for &i in &order {
            let p = exp[i] / sum;
            if cum > self.top_p {
                break; // `cum - p > top_p` for every later token
            }
            cum += p;
            kept.push((i, p));
        }
        let total: f32 = kept.iter().map(|(_, p)| p).sum();
        let mut u = self.uniform() as f32 * total;
        for &(i, p) in &kept {
            if u < p {
                return i as u32;
            }
            u -= p;
        }
        kept.last().map_or(0, |&(i, _)| i as u32)
    }
}

/// Index of the largest logit (the first one on ties, like `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(0.0, 0.9, 1);
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, 3.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_crossing_token_only() {
        // probs ≈ [0.6652, 0.2447, 0.09] : top_p 0.5 keeps just the first (it crosses 0.5).
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(1.0, 0.5, 7);
        assert!((0..200).all(|_| s.sample(&logits) == 0));
        // top_p 0.7: the first has 0.665 < 0.7, so the second (crossing) is kept too, never the third.
        let mut s = Sampler::new(1.0, 0.7, 7);
        let draws: Vec<u32> = (0..400).map(|_| s.sample(&logits)).collect();
        assert!(draws.contains(&0) && draws.contains(&1) && !draws.contains(&2));
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<u32> = { let mut s = Sampler::new(0.8, 0.95, 42); (0..20).map(|_| s.sample(&logits)).collect() };
        let b: Vec<u32> = { let mut s = Sampler::new(0.8, 0.95, 42); (0..20).map(|_| s.sample(&logits)).collect() };
        let c: Vec<u32> = { let mut s = Sampler::new(0.8, 0.95, 43); (0..20).map(|_| s.sample(&logits)).collect() };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
