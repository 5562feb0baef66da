"""Group-by over Parquet files with the DataFrame API: repartition by hash of the key, GROUP BY in each partition.

    python groupby_dataframe.py -i 'data/*.parquet' -o out/ -n 8
    mpiexec -n 3 python groupby_dataframe.py -i 'data/*.parquet' -o out/ -n 8
"""
import argparse

import mpipipe


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-i", "--input_paths", nargs="+", required=True)
    parser.add_argument("-o", "--output_path", required=True)
    parser.add_argument("-n", "--npartitions", type=int, default=8)
    args = parser.parse_args()

    sp = mpipipe.init()
    df = sp.read_parquet(args.input_paths)
    df = df.repartition(args.npartitions, hash_by="key")
    df = sp.partial_sql("select key, count(*) as n, sum(val) as s, min(tag) as t from {0} group by key", df)
    df.write_parquet(args.output_path)


if __name__ == "__main__":
    main()
