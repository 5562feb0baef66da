"""Arrow and Parquet helpers with smallpond's names (`mpipipe.io.arrow`), and the small shared constants."""
