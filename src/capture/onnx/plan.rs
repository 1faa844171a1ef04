//! Run planning: how many marked runs the memory budget takes, and which values each marks.
//!
//! Contract: the values' sizes come from the fully marked session's (inferred) output types
//! ([`value_sizes`]); [`plan_runs`] splits the values, in graph order, into consecutive runs
//! whose sizes fit the budget together (`--max-memory`, else [`default_memory_budget`]); a value
//! larger than the budget runs alone. [`RunPlan`] is the outcome, and tells the user when it
//! takes more than one run.

use ort::session::Session;
use std::ops::Range;

/// The runs of one capture.
pub(super) struct RunPlan {
    /// The memory budget, bytes.
    pub budget: u64,
    /// Each run's values, as a range of the marked values (graph order).
    pub runs: Vec<Range<usize>>,
    /// All values' known sizes summed, bytes.
    pub estimated_total: u64,
}

impl RunPlan {
    /// Plans the runs for the values `names`, sized from `session` (which marks them all) and
    /// the input's shape; `max_memory`: the user's budget.
    pub(super) fn new(
        session: &Session,
        names: &[&str],
        input_shape: &[usize],
        max_memory: Option<u64>,
    ) -> RunPlan {
        let sizes = value_sizes(session, names, input_shape);
        let budget = max_memory.unwrap_or_else(default_memory_budget);
        RunPlan {
            budget,
            runs: plan_runs(&sizes, budget),
            estimated_total: sizes.iter().map(|s| s.unwrap_or(0)).sum(),
        }
    }

    /// Says on stderr why the capture takes several runs (nothing when it takes one).
    pub(super) fn announce(&self, values: usize) {
        if self.runs.len() > 1 {
            eprintln!(
                "the {} marked values take about {} together, more than the memory budget of {} \
                 (--max-memory): capturing them over {} runs",
                values,
                bytesize::ByteSize(self.estimated_total).display().iec(),
                bytesize::ByteSize(self.budget).display().iec(),
                self.runs.len()
            );
        }
    }
}

/// Bytes each value will take, from the marked session's (inferred) output types; a dimension
/// ONNX Runtime leaves symbolic is taken as the input's batch size when it is the first, else the
/// value's size is unknown (`None`).
fn value_sizes(session: &Session, names: &[&str], input_shape: &[usize]) -> Vec<Option<u64>> {
    let known: std::collections::HashMap<&str, &ort::value::ValueType> = session
        .outputs()
        .iter()
        .map(|o| (o.name(), o.dtype()))
        .collect();
    names
        .iter()
        .map(|n| match known.get(n) {
            Some(ort::value::ValueType::Tensor { ty, shape, .. }) => {
                let mut elements: u64 = 1;
                for (i, &d) in shape.iter().enumerate() {
                    let d = match d {
                        d if d >= 0 => d as u64,
                        _ if i == 0 => input_shape.first().copied().unwrap_or(1) as u64,
                        _ => return None,
                    };
                    elements = elements.saturating_mul(d);
                }
                ty.byte_size(elements as usize).map(|b| b as u64)
            }
            _ => None,
        })
        .collect()
}

/// Splits the values (in graph order) into consecutive runs whose values fit `budget` together.
/// A value of unknown size counts as the largest known one (when no size is known at all, there
/// is one run); a value larger than the budget gets a run of its own (it cannot be captured in
/// less).
pub fn plan_runs(sizes: &[Option<u64>], budget: u64) -> Vec<Range<usize>> {
    let largest = sizes.iter().flatten().copied().max().unwrap_or(0);
    let mut runs = Vec::new();
    let (mut start, mut used) = (0, 0u64);
    for (i, size) in sizes.iter().enumerate() {
        let size = size.unwrap_or(largest);
        if i > start && used.saturating_add(size) > budget {
            runs.push(start..i);
            (start, used) = (i, 0);
        }
        used = used.saturating_add(size);
    }
    if start < sizes.len() || runs.is_empty() {
        runs.push(start..sizes.len());
    }
    runs
}

/// The default `--max-memory`: half of the memory available now (Linux `MemAvailable`), else
/// 4 GiB where that cannot be read.
pub fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

#[cfg(test)]
mod tests {
    use super::plan_runs;

    #[test]
    fn everything_in_one_run_when_it_fits() {
        assert_eq!(plan_runs(&[Some(10), Some(20), Some(30)], 60), vec![0..3]);
        assert_eq!(plan_runs(&[], 60), vec![0..0]);
    }

    #[test]
    fn consecutive_runs_each_within_the_budget() {
        let sizes = [Some(10), Some(20), Some(30), Some(5), Some(40)];
        assert_eq!(plan_runs(&sizes, 35), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn a_value_larger_than_the_budget_runs_alone() {
        let sizes = [Some(10), Some(100), Some(10)];
        assert_eq!(plan_runs(&sizes, 50), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn unknown_sizes_count_as_the_largest_known() {
        let sizes = [Some(10), None, Some(30), None];
        assert_eq!(plan_runs(&sizes, 40), vec![0..2, 2..3, 3..4]);
        // Nothing known: nothing to plan with, one run.
        assert_eq!(plan_runs(&[None, None], 1), vec![0..2]);
    }
}
