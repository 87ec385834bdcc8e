//! A line-based unified diff (Myers' O(ND) algorithm), enough for `sbmesh inject --diff` to
//! show what the webhook would add to each manifest, in the format `diff -u` and `patch` use.

use std::fmt::Write as _;

/// Lines of context around each change, as `diff -u` prints by default.
pub const CONTEXT: usize = 3;

/// The Myers trace may hold at most this many cells; past it the differing middle is shown
/// as one removal and one addition (still a correct diff, only a longer one).
const MAX_TRACE_CELLS: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Equal,
    Delete,
    Insert,
}

/// A unified diff of `old` and `new` with the given file labels, or `None` when they are equal.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let edits = edit_script(&a, &b);
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    for hunk in hunks(&edits) {
        write_hunk(
            &mut out,
            &edits[hunk.0..hunk.1],
            &a,
            &b,
            position(&edits, hunk.0),
        );
    }
    Some(out)
}

/// Old and new line counts consumed before edit `i`.
fn position(edits: &[Edit], i: usize) -> (usize, usize) {
    edits[..i].iter().fold((0, 0), |(x, y), e| match e {
        Edit::Equal => (x + 1, y + 1),
        Edit::Delete => (x + 1, y),
        Edit::Insert => (x, y + 1),
    })
}

/// Ranges of the edit script that form hunks: changes with up to `CONTEXT` equal lines
/// around them, merged when their contexts touch.
fn hunks(edits: &[Edit]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, e) in edits.iter().enumerate() {
        if *e == Edit::Equal {
            continue;
        }
        let start = i.saturating_sub(CONTEXT);
        let end = (i + 1 + CONTEXT).min(edits.len());
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

fn write_hunk(out: &mut String, edits: &[Edit], a: &[&str], b: &[&str], (x0, y0): (usize, usize)) {
    let old_len = edits.iter().filter(|e| **e != Edit::Insert).count();
    let new_len = edits.iter().filter(|e| **e != Edit::Delete).count();
    // An empty range names the line before it (GNU diff's convention).
    let old_start = if old_len == 0 { x0 } else { x0 + 1 };
    let new_start = if new_len == 0 { y0 } else { y0 + 1 };
    let _ = writeln!(
        out,
        "@@ -{} +{} @@",
        range(old_start, old_len),
        range(new_start, new_len)
    );
    let (mut x, mut y) = (x0, y0);
    for e in edits {
        let (sign, line) = match e {
            Edit::Equal => {
                x += 1;
                y += 1;
                (' ', a[x - 1])
            }
            Edit::Delete => {
                x += 1;
                ('-', a[x - 1])
            }
            Edit::Insert => {
                y += 1;
                ('+', b[y - 1])
            }
        };
        out.push(sign);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    }
}

fn range(start: usize, len: usize) -> String {
    if len == 1 {
        start.to_string()
    } else {
        format!("{start},{len}")
    }
}

/// The shortest edit script from `a` to `b`. Common head and tail are taken off first: an
/// injection changes a few places in a long document.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Edit> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut edits = vec![Edit::Equal; head];
    edits.extend(myers(ma, mb).unwrap_or_else(|| {
        let mut all = vec![Edit::Delete; ma.len()];
        all.extend(std::iter::repeat_n(Edit::Insert, mb.len()));
        all
    }));
    edits.extend(std::iter::repeat_n(Edit::Equal, tail));
    edits
}

/// Myers' greedy forward search with a saved trace, then a backtrack. `None` when the trace
/// would outgrow [`MAX_TRACE_CELLS`].
fn myers(a: &[&str], b: &[&str]) -> Option<Vec<Edit>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    let width = 2 * max as usize + 1;
    let idx = |k: isize| (k + max) as usize;
    let mut v = vec![0isize; width + 1];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    'search: for d in 0..=max {
        if (trace.len() + 1).saturating_mul(width) > MAX_TRACE_CELLS {
            return None;
        }
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let mut x = if k == -d || (k != d && v[idx(k - 1)] < v[idx(k + 1)]) {
                v[idx(k + 1)]
            } else {
                v[idx(k - 1)] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[idx(k)] = x;
            if x >= n && y >= m {
                break 'search;
            }
            k += 2;
        }
    }
    // `trace[d]` is the state before step d; the last step's state is `v`.
    let mut edits = Vec::with_capacity((n + m) as usize);
    let (mut x, mut y) = (n, m);
    for (d, v) in trace.iter().enumerate().rev() {
        let d = d as isize;
        let k = x - y;
        let prev_k = if k == -d || (k != d && v[idx(k - 1)] < v[idx(k + 1)]) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = v[idx(prev_k)];
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            edits.push(Edit::Equal);
            x -= 1;
            y -= 1;
        }
        if d > 0 {
            edits.push(if x == prev_x {
                Edit::Insert
            } else {
                Edit::Delete
            });
        }
        x = prev_x;
        y = prev_y;
    }
    edits.reverse();
    Some(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a unified diff's hunks to `old` (a tiny `patch`), to check the diff is right.
    fn apply(old: &str, diff: &str) -> String {
        let a: Vec<&str> = old.split_inclusive('\n').collect();
        let mut out = String::new();
        let mut next = 0usize;
        let mut lines = diff.lines().skip(2).peekable();
        while let Some(header) = lines.next() {
            let old_range = header.trim_start_matches("@@ -").split(' ').next().unwrap();
            let mut parts = old_range.split(',');
            let start: usize = parts.next().unwrap().parse().unwrap();
            let len: usize = parts.next().map_or(1, |l| l.parse().unwrap());
            let first = if len == 0 { start } else { start - 1 };
            for l in &a[next..first] {
                out.push_str(l);
            }
            next = first;
            while let Some(l) = lines.peek() {
                if l.starts_with("@@") {
                    break;
                }
                let l = lines.next().unwrap();
                match l.as_bytes()[0] {
                    b' ' => {
                        out.push_str(&l[1..]);
                        out.push('\n');
                        next += 1;
                    }
                    b'-' => next += 1,
                    b'+' => {
                        out.push_str(&l[1..]);
                        out.push('\n');
                    }
                    _ => panic!("bad line {l}"),
                }
            }
        }
        for l in &a[next..] {
            out.push_str(l);
        }
        out
    }

    fn text(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), None);
    }

    #[test]
    fn additions_are_shown_with_three_lines_of_context() {
        let old = text(&["1", "2", "3", "4", "5", "6", "7", "8"]);
        let new = text(&["1", "2", "3", "4", "new", "5", "6", "7", "8"]);
        let d = unified(&old, &new, "a", "b").unwrap();
        assert_eq!(
            d,
            "--- a\n+++ b\n@@ -2,6 +2,7 @@\n 2\n 3\n 4\n+new\n 5\n 6\n 7\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks_and_near_ones_merge() {
        let old: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
        let old_refs: Vec<&str> = old.iter().map(String::as_str).collect();
        let mut new_refs = old_refs.clone();
        new_refs[2] = "three";
        new_refs[25] = "twenty-six";
        new_refs.insert(28, "extra");
        let (o, n) = (text(&old_refs), text(&new_refs));
        let d = unified(&o, &n, "a", "b").unwrap();
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert_eq!(apply(&o, &d), n);
    }

    #[test]
    fn insertion_into_empty_text_names_line_zero() {
        let d = unified("", "a\n", "a", "b").unwrap();
        assert_eq!(d, "--- a\n+++ b\n@@ -0,0 +1 @@\n+a\n");
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        let d = unified("a\n", "a\nb", "a", "b").unwrap();
        assert!(d.ends_with("+b\n\\ No newline at end of file\n"), "{d}");
    }

    #[test]
    fn diffs_apply_back_to_the_new_text() {
        // A small deterministic generator instead of a property-test dependency.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let old: Vec<String> = (0..next() % 25).map(|_| (next() % 5).to_string()).collect();
            let new: Vec<String> = (0..next() % 25).map(|_| (next() % 5).to_string()).collect();
            let o = text(&old.iter().map(String::as_str).collect::<Vec<_>>());
            let n = text(&new.iter().map(String::as_str).collect::<Vec<_>>());
            match unified(&o, &n, "a", "b") {
                None => assert_eq!(o, n),
                Some(d) => assert_eq!(apply(&o, &d), n, "old {o:?} new {n:?}\n{d}"),
            }
        }
    }
}
