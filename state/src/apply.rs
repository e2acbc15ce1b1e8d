//! Applying one log entry.

use crate::command::{Batch, Outcome};
use crate::kv::{KvRead, StorageError, Txn};

/// Apply `batch`, the payload of log entry `index`, inside `txn`. Returns one outcome per
/// command, in order. The caller commits `txn`'s writes atomically together with its own
/// bookkeeping (last applied log id).
pub fn apply_batch<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    index: u64,
    batch: &Batch,
) -> Result<Vec<Outcome>, StorageError> {
    let _ = (txn, index, batch);
    todo!()
}
