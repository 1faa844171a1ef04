//! Summary statistics of one tensor (`dinodiff inspect`).

use super::{CHUNK, View};
use crate::dump::element::{ElementKind, decode_into, element_size};
use rayon::prelude::*;
use serde::Serialize;

/// Summary statistics of one tensor: min, max, mean, std over finite elements; NaN/Inf counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub elements: usize,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation (ddof = 0).
    pub std: Option<f64>,
    pub nan: u64,
    pub inf: u64,
}

#[derive(Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    nan: u64,
    inf: u64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        n: 0.0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        nan: 0,
        inf: 0,
    };

    /// Chan et al.'s parallel combination of (count, mean, M2).
    fn merge(self, o: Moments) -> Moments {
        if o.n == 0.0 {
            return Moments {
                nan: self.nan + o.nan,
                inf: self.inf + o.inf,
                ..self
            };
        }
        if self.n == 0.0 {
            return Moments {
                nan: self.nan + o.nan,
                inf: self.inf + o.inf,
                ..o
            };
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * o.n / n,
            m2: self.m2 + o.m2 + delta * delta * self.n * o.n / n,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            nan: self.nan + o.nan,
            inf: self.inf + o.inf,
        }
    }
}

pub fn stats(v: View<'_>) -> Stats {
    if !ElementKind::decodable(v.dtype) {
        return Stats {
            elements: v.elements(),
            min: None,
            max: None,
            mean: None,
            std: None,
            nan: 0,
            inf: 0,
        };
    }
    let n = v.elements();
    let size = element_size(v.dtype);
    let parts: Vec<Moments> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let lo = c * CHUNK;
            let len = CHUNK.min(n - lo);
            let mut x = vec![0f64; len];
            decode_into(v.dtype, &v.data[lo * size..], &mut x);
            let x = &x[..];
            let mut m = Moments::EMPTY;
            let mut sum = 0.0;
            for &e in x {
                if e.is_finite() {
                    m.n += 1.0;
                    sum += e;
                    m.min = m.min.min(e);
                    m.max = m.max.max(e);
                } else if e.is_nan() {
                    m.nan += 1;
                } else {
                    m.inf += 1;
                }
            }
            if m.n > 0.0 {
                m.mean = sum / m.n;
                m.m2 = x
                    .iter()
                    .filter(|e| e.is_finite())
                    .map(|e| (e - m.mean) * (e - m.mean))
                    .sum();
            }
            m
        })
        .collect();
    let m = parts.into_iter().fold(Moments::EMPTY, Moments::merge);
    let some = m.n > 0.0;
    Stats {
        elements: n,
        min: some.then_some(m.min),
        max: some.then_some(m.max),
        mean: some.then_some(m.mean),
        std: some.then(|| (m.m2 / m.n).sqrt()),
        nan: m.nan,
        inf: m.inf,
    }
}
