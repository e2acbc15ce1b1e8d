//! RocksDB storage of a node: the Raft log and metadata, and the state machine's column
//! families (see `sessiond_state::kv::Cf`), all in one database.
