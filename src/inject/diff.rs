//! A line-based unified diff, in the format `diff -u` and `patch` use, so that
//! `sbmesh inject --diff` shows what the webhook would add to each manifest. The diffing is
//! the `similar` crate's (Myers' algorithm); this module only fixes the presentation.

use std::time::Duration;

use similar::TextDiff;

/// Lines of context around each change, as `diff -u` prints by default.
pub const CONTEXT: usize = 3;

/// How long the search for the shortest diff may take; past it `similar` settles for a
/// longer diff, which is still correct. Injected documents differ in a few places, so this
/// only bounds pathological input.
const DEADLINE: Duration = Duration::from_secs(2);

/// A unified diff of `old` and `new` with the given file labels, or `None` when they are equal.
///
/// Hunks carry [`CONTEXT`] lines of context and merge when their contexts touch; an empty
/// range names the line before it, and a last line without a newline is marked
/// `\ No newline at end of file`, all as GNU `diff -u` does.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let diff = TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(DEADLINE)
        .diff_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(CONTEXT)
        .missing_newline_hint(true)
        .header(old_label, new_label)
        .to_string();
    // Texts that differ always give at least one hunk; an empty answer would mean "equal".
    (!text.is_empty()).then_some(text)
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
    fn deleting_everything_names_line_zero_on_the_new_side() {
        let d = unified("a\nb\n", "", "a", "b").unwrap();
        assert_eq!(d, "--- a\n+++ b\n@@ -1,2 +0,0 @@\n-a\n-b\n");
    }

    #[test]
    fn changes_six_equal_lines_apart_share_a_hunk_and_seven_apart_do_not() {
        let old: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
        let old_refs: Vec<&str> = old.iter().map(String::as_str).collect();
        for (gap, hunks) in [(6, 1), (7, 2)] {
            let mut new_refs = old_refs.clone();
            new_refs[5] = "x";
            new_refs[5 + gap + 1] = "y";
            let (o, n) = (text(&old_refs), text(&new_refs));
            let d = unified(&o, &n, "a", "b").unwrap();
            assert_eq!(d.matches("@@ -").count(), hunks, "gap {gap}:\n{d}");
            assert_eq!(apply(&o, &d), n);
        }
    }

    #[test]
    fn a_changed_last_line_without_newline_is_marked_on_both_sides() {
        let d = unified("a\nb", "a\nc", "a", "b").unwrap();
        assert_eq!(
            d,
            "--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
        );
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
