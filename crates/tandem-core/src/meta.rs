//! Replicated document metadata as state-based CRDTs: the title is a
//! last-writer-wins register, the view count a grow-only counter (one slot per
//! instance), the tags an observed-remove set (an add wins over a concurrent
//! remove), the language another last-writer-wins register. Every instance keeps a full state; states merge by [`DocMeta::merge`],
//! which is commutative, associative and idempotent, so instances converge
//! whatever order states arrive in and however often.
//!
//! Owns: [`Lww`], [`GCounter`], [`OrSet`], [`DocMeta`], [`MetaView`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).
//! Time and instance ids are arguments. The OpenAPI schema of [`MetaView`]
//! is described in the server's `web` layer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::language;

/// Last-writer-wins register: the write with the greater `(time, instance)`
/// wins; ties between equal stamps are impossible within one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww {
    pub value: String,
    pub time: i64,
    pub instance: String,
}

impl Lww {
    pub fn set(&mut self, value: &str, time: i64, instance: &str) {
        // Never go back in time, even if this instance's clock did.
        let time = time.max(self.time + 1);
        *self = Lww {
            value: value.to_owned(),
            time,
            instance: instance.to_owned(),
        };
    }

    fn stamp(&self) -> (i64, &str, &str) {
        (self.time, &self.instance, &self.value)
    }

    pub fn merge(&mut self, other: &Lww) {
        if other.stamp() > self.stamp() {
            *self = other.clone();
        }
    }
}

/// Grow-only counter: one slot per instance; the value is their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GCounter(pub BTreeMap<String, u64>);

impl GCounter {
    pub fn increment(&mut self, instance: &str, by: u64) {
        *self.0.entry(instance.to_owned()).or_default() += by;
    }
    pub fn value(&self) -> u64 {
        self.0.values().sum()
    }
    pub fn merge(&mut self, other: &GCounter) {
        for (k, v) in &other.0 {
            let slot = self.0.entry(k.clone()).or_default();
            *slot = (*slot).max(*v);
        }
    }
}

/// A unique tag for one add: (instance, counter).
pub type Dot = (String, u64);

/// Observed-remove set: each add carries a fresh dot; a remove tombstones
/// the dots it has seen. An add concurrent with a remove has a dot the
/// remove did not see, so the element stays (add wins).
///
/// Kept small whatever the history: tombstoned dots leave `adds` (an
/// element whose dots are all gone leaves with them), and tombstones are
/// kept as ranges of counters per instance, so add/remove cycles grow
/// nothing: the state holds the live dots and at most one range more than
/// that per instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    pub adds: BTreeMap<String, BTreeSet<Dot>>,
    pub removed: Tombstones,
}

/// Removed dots: per instance, sorted disjoint ranges of counters
/// (inclusive), adjacent ones joined. Only dots seen removed are covered: a
/// counter never seen stays outside (it may be a live add not yet merged).
/// Reads the older form, a list of dots, too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TombstonesWire")]
pub struct Tombstones(BTreeMap<String, Vec<(u64, u64)>>);

#[derive(Deserialize)]
#[serde(untagged)]
enum TombstonesWire {
    Ranges(BTreeMap<String, Vec<(u64, u64)>>),
    Dots(Vec<Dot>),
}

impl From<TombstonesWire> for Tombstones {
    fn from(w: TombstonesWire) -> Self {
        let mut t = Tombstones::default();
        match w {
            TombstonesWire::Ranges(m) => {
                for (i, ranges) in m {
                    for (lo, hi) in ranges {
                        t.insert_range(&i, lo.min(hi), lo.max(hi));
                    }
                }
            }
            TombstonesWire::Dots(dots) => {
                for (i, n) in dots {
                    t.insert_range(&i, n, n);
                }
            }
        }
        t
    }
}

impl Tombstones {
    pub fn contains(&self, (instance, n): &Dot) -> bool {
        self.0
            .get(instance)
            .is_some_and(|r| r.iter().any(|(lo, hi)| lo <= n && n <= hi))
    }

    /// The highest counter of `instance` covered.
    fn max(&self, instance: &str) -> u64 {
        self.0
            .get(instance)
            .and_then(|r| r.last())
            .map_or(0, |(_, hi)| *hi)
    }

    fn insert_range(&mut self, instance: &str, lo: u64, hi: u64) {
        let ranges = self.0.entry(instance.to_owned()).or_default();
        ranges.push((lo, hi));
        ranges.sort_unstable();
        let mut joined: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(lo, hi) in ranges.iter() {
            match joined.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => joined.push((lo, hi)),
            }
        }
        *ranges = joined;
    }

    pub fn insert(&mut self, (instance, n): &Dot) {
        self.insert_range(instance, *n, *n);
    }

    pub fn merge(&mut self, other: &Tombstones) {
        for (i, ranges) in &other.0 {
            for &(lo, hi) in ranges {
                self.insert_range(i, lo, hi);
            }
        }
    }

    /// Ranges held, in all.
    pub fn ranges(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

impl OrSet {
    fn next_dot(&self, instance: &str) -> Dot {
        let max = self
            .adds
            .values()
            .flatten()
            .filter(|(i, _)| i == instance)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
            .max(self.removed.max(instance));
        (instance.to_owned(), max + 1)
    }

    pub fn add(&mut self, element: &str, instance: &str) {
        let dot = self.next_dot(instance);
        self.adds.entry(element.to_owned()).or_default().insert(dot);
    }

    pub fn remove(&mut self, element: &str) {
        if let Some(dots) = self.adds.remove(element) {
            for d in &dots {
                self.removed.insert(d);
            }
        }
    }

    pub fn contains(&self, element: &str) -> bool {
        // A state in the older form may still list tombstoned dots.
        self.adds
            .get(element)
            .is_some_and(|dots| dots.iter().any(|d| !self.removed.contains(d)))
    }

    /// The elements, sorted.
    pub fn elements(&self) -> Vec<String> {
        self.adds
            .keys()
            .filter(|e| self.contains(e))
            .cloned()
            .collect()
    }

    pub fn merge(&mut self, other: &OrSet) {
        self.removed.merge(&other.removed);
        for (e, dots) in &other.adds {
            self.adds
                .entry(e.clone())
                .or_default()
                .extend(dots.iter().cloned());
        }
        // Drop what the tombstones cover (from either side).
        let removed = &self.removed;
        self.adds.retain(|_, dots| {
            dots.retain(|d| !removed.contains(d));
            !dots.is_empty()
        });
    }
}

/// A document's replicated metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    pub title: Lww,
    pub views: GCounter,
    pub tags: OrSet,
    /// The language chosen for the document, a [`crate::language`] id; empty
    /// when none was (or the choice was cleared): then the title says.
    /// States stored before languages existed read as empty.
    #[serde(default)]
    pub language: Lww,
}

/// What clients see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaView {
    pub title: String,
    /// The language to show the document in: the one chosen, or the guess
    /// from the title's extension (`plaintext` when there is none).
    #[serde(default = "plain")]
    pub language: String,
    /// Whether `language` was chosen (true) or guessed from the title.
    #[serde(default)]
    pub language_set: bool,
    pub tags: Vec<String>,
    pub views: u64,
}

fn plain() -> String {
    language::PLAIN.to_owned()
}

impl DocMeta {
    /// The state of a document known only by its stored title.
    pub fn with_title(title: &str) -> Self {
        DocMeta {
            title: Lww {
                value: title.to_owned(),
                ..Lww::default()
            },
            ..DocMeta::default()
        }
    }

    pub fn merge(&mut self, other: &DocMeta) {
        self.title.merge(&other.title);
        self.views.merge(&other.views);
        self.tags.merge(&other.tags);
        self.language.merge(&other.language);
    }

    pub fn view(&self) -> MetaView {
        let chosen = &self.language.value;
        MetaView {
            title: self.title.value.clone(),
            language: language::effective(chosen, &self.title.value).to_owned(),
            language_set: language::valid(chosen),
            tags: self.tags.elements(),
            views: self.views.value(),
        }
    }

    /// [`DocMeta::view`] with at most `max_tags` tags (the first, sorted):
    /// concurrent adds on several instances can merge past a local limit,
    /// and what clients are sent stays bounded.
    pub fn view_bounded(&self, max_tags: usize) -> MetaView {
        let mut v = self.view();
        v.tags.truncate(max_tags);
        v
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 32;

/// A tag: 1–32 characters, each a letter, a digit, a space or one of
/// `-_.:/#+`, not starting or ending with a space.
pub fn valid_tag(t: &str) -> bool {
    let n = t.chars().count();
    (1..=MAX_TAG_CHARS).contains(&n)
        && t.chars().all(|c| {
            c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | ':' | '/' | '#' | '+')
        })
        && t.trim() == t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random histories of operations at three instances, as states.
    fn arb_meta() -> impl Strategy<Value = DocMeta> {
        let op = (0..3usize, 0..6u8, "[a-c]{1,2}", 0..50i64);
        proptest::collection::vec(op, 0..12).prop_map(|ops| {
            let mut m = DocMeta::default();
            for (inst, kind, s, t) in ops {
                let inst = ["i0", "i1", "i2"][inst];
                match kind {
                    0 => m.title.set(&s, t, inst),
                    5 => m.language.set(["rust", "", "go"][t as usize % 3], t, inst),
                    1 => m.views.increment(inst, 1),
                    2 | 3 => m.tags.add(&s, inst),
                    _ => m.tags.remove(&s),
                }
            }
            m
        })
    }

    fn merged(a: &DocMeta, b: &DocMeta) -> DocMeta {
        let mut x = a.clone();
        x.merge(b);
        x
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_meta(), b in arb_meta()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in arb_meta(), b in arb_meta(), c in arb_meta()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_meta(), b in arb_meta()) {
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab.clone());
        }

        #[test]
        fn merge_only_grows(a in arb_meta(), b in arb_meta()) {
            let ab = merged(&a, &b);
            prop_assert!(ab.views.value() >= a.views.value().max(b.views.value()));
            prop_assert!(ab.title.time >= a.title.time.max(b.title.time));
        }
    }

    #[test]
    fn tags_are_short_with_a_plain_charset_and_views_bounded() {
        for ok in [
            "a",
            "rust",
            "v1.2",
            "to do",
            "x/y#z+1",
            "naïve",
            &"t".repeat(32),
        ] {
            assert!(valid_tag(ok), "{ok:?}");
        }
        for bad in [
            "",
            " a",
            "a ",
            "a,b",
            "a\nb",
            "<b>",
            "a\"b",
            &"t".repeat(33),
            "😀",
        ] {
            assert!(!valid_tag(bad), "{bad:?}");
        }
        let mut m = DocMeta::default();
        for t in ["c", "a", "b"] {
            m.tags.add(t, "i");
        }
        assert_eq!(m.view_bounded(2).tags, ["a", "b"]);
        assert_eq!(m.view().tags.len(), 3);
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove() {
        let mut base = OrSet::default();
        base.add("urgent", "i0");
        let (mut x, mut y) = (base.clone(), base.clone());
        x.remove("urgent");
        y.add("urgent", "i1");
        x.merge(&y);
        assert!(x.contains("urgent"));
        // A remove that saw every add does remove.
        x.remove("urgent");
        let mut z = y.clone();
        z.merge(&x);
        assert!(!z.contains("urgent"));
        // Re-adding after a remove works (a fresh dot).
        z.add("urgent", "i0");
        assert!(z.contains("urgent"));
    }

    #[test]
    fn add_remove_cycles_grow_nothing_and_old_states_still_read() {
        let mut m = DocMeta::default();
        m.tags.add("keep", "i0");
        for _ in 0..10_000 {
            m.tags.add("churn", "i0");
            m.tags.remove("churn");
        }
        let mut other = DocMeta::default();
        other.tags.add("theirs", "i1");
        other.tags.remove("theirs");
        other.tags.add("theirs", "i1");
        m.merge(&other);
        assert_eq!(m.view().tags, ["keep", "theirs"]);
        // One live dot per live tag, one range per instance past it.
        assert_eq!(m.tags.adds.values().map(BTreeSet::len).sum::<usize>(), 2);
        assert_eq!(m.tags.removed.ranges(), 2);
        assert!(m.to_json().len() < 300, "{}", m.to_json());
        // A state stored in the older form (tombstones as a list of dots).
        let old = r#"{"title":{"value":"t","time":1,"instance":"i0"},"views":{},
            "tags":{"adds":{"a":[["i0",1]],"b":[["i0",2],["i1",1]],"c":[["i0",3]]},
            "removed":[["i0",2],["i0",3]]}}"#;
        let m = DocMeta::from_json(old).unwrap();
        assert_eq!(m.view().tags, ["a", "b"]);
        assert!(m.tags.removed.contains(&("i0".into(), 2)));
        assert_eq!(DocMeta::from_json(&m.to_json()), Some(m.clone()));
    }

    #[test]
    fn last_writer_wins_with_the_instance_as_tie_break() {
        let mut a = Lww::default();
        a.set("from a", 10, "a");
        let mut b = Lww::default();
        b.set("from b", 10, "b");
        let mut x = a.clone();
        x.merge(&b);
        let mut y = b.clone();
        y.merge(&a);
        assert_eq!(x, y);
        assert_eq!(x.value, "from b");
        // A later write wins even with a smaller instance id.
        a.set("later", 11, "a");
        x.merge(&a);
        assert_eq!(x.value, "later");
    }
}
