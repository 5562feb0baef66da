"""Task bodies of the data nodes; the engines (DuckDB, pyarrow) are imported only here."""
