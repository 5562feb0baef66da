"""smallpond's `contrib` nodes under their module paths: `copy_table` (CopyArrowTable, StreamCopy) and
`log_dataset` (LogDataSet). smallpond's `contrib.warc` (web archive import) is not here."""
