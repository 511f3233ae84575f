//! The proxy's own configuration file (see `../shared/design.md`, "Config file").
