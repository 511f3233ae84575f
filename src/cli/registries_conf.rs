//! `mirrorgate registries-conf`: the rules as the containers-registries.conf(5) file the Machine
//! Config Operator writes.

use anyhow::Result;

use crate::RuleArgs;

/// Prints the registries.conf of the rules `args` name.
pub fn print(args: &RuleArgs) -> Result<()> {
    let (rule_set, _, _) = args.load(true)?;
    super::tell_refused(&rule_set);
    print!("{}", rule_set.to_registries_conf()?);
    Ok(())
}
