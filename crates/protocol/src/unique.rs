//! Sets that travel as JSON arrays and refuse a repeated item, as the document's
//! `uniqueItems: true` says, instead of silently folding it (what serde's own `BTreeSet`
//! does). A client listing `delegates:edit` twice has made a mistake worth hearing about.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Deserialize, SeqAccess, Visitor};

/// `#[serde(deserialize_with = "crate::unique::set")]`: a `BTreeSet` from an array whose
/// items are all distinct.
pub fn set<'de, D, T>(deserializer: D) -> Result<BTreeSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    struct Distinct<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Ord> Visitor<'de> for Distinct<T> {
        type Value = BTreeSet<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of distinct items")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BTreeSet<T>, A::Error> {
            let mut items = BTreeSet::new();
            let mut index = 0usize;
            while let Some(item) = seq.next_element()? {
                if !items.insert(item) {
                    return Err(de::Error::custom(format_args!(
                        "item {index} repeats an earlier one; each may appear once"
                    )));
                }
                index += 1;
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(Distinct(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::set")]
        items: std::collections::BTreeSet<u8>,
    }

    #[test]
    fn a_repeated_item_is_refused_and_distinct_ones_are_kept() {
        let error = serde_json::from_str::<Body>(r#"{"items":[1,2,1]}"#).expect_err("repeated");
        assert!(error.to_string().contains("item 2 repeats"), "{error}");
        let body: Body = serde_json::from_str(r#"{"items":[2,1]}"#).expect("distinct");
        assert_eq!(body.items.into_iter().collect::<Vec<_>>(), [1, 2]);
    }
}
