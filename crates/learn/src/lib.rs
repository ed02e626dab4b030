//! triage-learn: the learning side, run from the command line and never by the server. Fitting
//! the classifier and the model abilities (`train`, with judging logged answers and replaying
//! public outcomes into a log), measuring routing quality (`eval`), and setting a profile's
//! target from logged traffic (`calibrate`). `cli` is the `triage` subcommands that front them.

pub mod calibrate;
pub mod cli;
pub mod eval;
pub mod train;
