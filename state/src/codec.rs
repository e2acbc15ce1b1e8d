//! Byte encoding of stored values and log payloads: postcard, compact and deterministic
//! (struct fields in order, maps as `BTreeMap` in key order), so equal states are equal bytes.

use crate::kv::StorageError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode a value. Encoding our own types cannot fail short of allocation failure.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding of in-memory values does not fail")
}

/// Decode a stored value; failure means corrupt storage, not a client error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError(format!("corrupt stored value: {e}")))
}
