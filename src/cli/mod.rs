//! The commands of the `mirrorgate` binary, one module each; the command line's definition and
//! the dispatch to these are `main.rs`'s, and so is loading the rules (`RuleArgs`) they share.
//! - [`serve`]: the proxy;
//! - [`resolve`], [`check`], [`registries_conf`]: answers to rule questions from the configured
//!   rule files (and the cluster);
//! - [`status`], [`withdraw`] (`deny`, `allow`), [`warm`]: a running server, through its admin
//!   API ([`admin`]).

pub mod admin;
pub mod check;
pub mod registries_conf;
pub mod resolve;
pub mod serve;
pub mod status;
pub mod warm;
pub mod withdraw;

use mirrorgate::rules::RuleSet;

/// Says on stderr which cluster objects the answer leaves out or takes in an earlier version
/// (as `serve` does), so that it is not mistaken for the whole cluster's.
fn tell_refused(rule_set: &RuleSet) {
    for error in rule_set.errors() {
        eprintln!("refused: {error}");
    }
}
