//! Hooks through which the request path reports what happened, so that metrics can be
//! attached without the services knowing how they are exported.

use crate::batcher::BatchObserver;
use crate::reads::ReadObserver;
use sessiond_state::command::Outcome;

/// Everything the services report. Every method has a no-op default.
pub trait Observer: BatchObserver + ReadObserver {
    /// A proposed command finished with `outcome`.
    fn outcome(&self, _op: &'static str, _outcome: &Outcome) {}
    /// A read was served; `superseded` when the previous token was presented in its grace window.
    fn read(&self, _op: &'static str, _superseded: bool) {}
}
