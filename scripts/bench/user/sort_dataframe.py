"""Global sort of Parquet records by a binary key with the DataFrame API: range-partition by the key's first
byte (the keys are uniform), then sort each partition; the output files, in name order, hold the keys in order.

    python sort_dataframe.py -i 'data/*.parquet' -o out/ -n 8
    mpiexec -n 3 python sort_dataframe.py -i 'data/*.parquet' -o out/ -n 8
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
    # the first byte of the key, 0..255, scaled to 0..npartitions-1: partition i holds smaller keys than i+1
    df = df.repartition(args.npartitions, by=f"('0x' || left(hex(key), 2))::INTEGER * {args.npartitions} // 256")
    df = df.partial_sort(by="key")
    df.write_parquet(args.output_path)


if __name__ == "__main__":
    main()
