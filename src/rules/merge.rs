//! Merging the mirror lists that several objects give for one source into one ordered list.
//!
//! This is the Machine Config Operator's merge (openshift/runtime-utils `mergedMirrors` and its
//! `topoGraph`): every list contributes the edges `m1→m2→…→mk` (and `mk→source` unless the source
//! is listed), the graph is sorted topologically, and every choice the edges leave open is made in
//! byte order. So lists that overlap keep their relative order, lists that do not are interleaved
//! by name, duplicates collapse, and the order of objects never matters. Cycles (contradictory
//! lists) are broken at the first unused node in byte order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Merges the mirror lists of one source (all of one kind: digest or tag) into the order in which
/// they are tried. The source itself is dropped when it sorts last, since it is tried last anyway.
pub(crate) fn merge_mirror_lists<'a, I>(source: &'a str, lists: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a [&'a str]>,
{
    // BTreeMaps keep every iteration in byte order, which is what makes the result deterministic.
    let mut successors: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut predecessors: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut add_edge = |from: &'a str, to: &'a str| {
        successors.entry(from).or_default().insert(to);
        successors.entry(to).or_default();
        predecessors.entry(to).or_default().insert(from);
        predecessors.entry(from).or_default();
    };
    for list in lists {
        for pair in list.windows(2) {
            add_edge(pair[0], pair[1]);
        }
        // Callers pass only lists with a real mirror, so every node appears in some edge.
        if let Some(&last) = list.last()
            && !list.contains(&source)
        {
            add_edge(last, source);
        }
    }

    let all_nodes: Vec<&str> = successors.keys().copied().collect();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut ready: VecDeque<&str> = all_nodes
        .iter()
        .copied()
        .filter(|n| predecessors[n].is_empty())
        .collect();
    let mut next_unused = 0;
    let mut order = Vec::with_capacity(all_nodes.len());
    while order.len() < all_nodes.len() {
        let node = match ready.pop_front() {
            Some(node) => node,
            None => {
                // A cycle: break it at the first unused node in byte order.
                let node = all_nodes[next_unused];
                next_unused += 1;
                if used.contains(node) {
                    continue;
                }
                node
            }
        };
        used.insert(node);
        order.push(node);
        // `successors[node]` is a BTreeSet, so newly freed nodes are queued in byte order.
        for &next in &successors[node] {
            let preds = predecessors.get_mut(next).expect("every node has an entry");
            preds.remove(node);
            if preds.is_empty() && !used.contains(next) {
                ready.push_back(next);
            }
        }
    }
    if order.last() == Some(&source) {
        order.pop();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(source: &str, lists: &[&[&str]]) -> Vec<String> {
        merge_mirror_lists(source, lists.iter().copied())
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn overlapping_lists_keep_their_relative_order() {
        assert_eq!(
            merge("s", &[&["a", "b", "c"], &["c", "d", "e"]]),
            ["a", "b", "c", "d", "e"]
        );
    }

    #[test]
    fn disjoint_lists_come_out_in_byte_order() {
        assert_eq!(merge("s", &[&["z"], &["a"]]), ["a", "z"]);
    }

    #[test]
    fn object_order_does_not_matter() {
        assert_eq!(
            merge("s", &[&["c", "d"], &["a", "b", "c"]]),
            merge("s", &[&["a", "b", "c"], &["c", "d"]])
        );
    }

    #[test]
    fn source_listed_in_the_middle_stays_a_mirror() {
        assert_eq!(
            merge("s", &[&["z1", "s", "y2"], &["s", "y2", "x3"]]),
            ["z1", "s", "y2", "x3"]
        );
    }

    #[test]
    fn source_listed_first_is_tried_first() {
        assert_eq!(merge("s", &[&["s", "m"]]), ["s", "m"]);
    }

    #[test]
    fn contradictory_orders_are_broken_in_byte_order() {
        assert_eq!(merge("s", &[&["m1", "m2"], &["m2", "m1"]]), ["m1", "m2"]);
    }

    #[test]
    fn duplicates_inside_one_list_collapse() {
        assert_eq!(merge("s", &[&["b", "a", "b"]]), ["a", "b"]);
    }
}
