"""DuckDB's httpfs extension (DuckDB's own S3 client: SQL over Parquet and CSV on S3) through
Chmura, default settings but for the endpoint, the credentials and, through SSL_CERT_FILE, the
CA. The extension comes from PyPI (`duckdb-ext-httpfs`) and is loaded from its file.

Usage: duckdb_suite.py ENDPOINT BUCKET
Runs every step, prints "ok"/"FAIL" per step, and exits non-zero if any failed.
"""
import glob
import os
import sys

import duckdb
import duckdb_ext

from steps import check, finish, step  # tests/clients/steps.py

endpoint, b = sys.argv[1:3]
scheme, host = endpoint.split("://", 1)
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "*", "*", "httpfs.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext[0]}'")
con.execute(
    f"""CREATE SECRET chmura (TYPE s3, KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
    SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}', REGION 'us-east-1', ENDPOINT '{host}',
    URL_STYLE 'path', USE_SSL {str(scheme == "https").lower()})"""
)
N = 400_000


def one(sql):
    return con.execute(sql).fetchall()


@step("COPY a table to Parquet on S3, then aggregate it and read one column (ranged reads)")
def _():
    con.execute(f"COPY (SELECT range AS id, 'row-' || range AS name FROM range({N})) TO 's3://{b}/t.parquet' (FORMAT parquet, ROW_GROUP_SIZE 100000)")
    check(one(f"SELECT count(*), sum(id) FROM 's3://{b}/t.parquet'") == [(N, N * (N - 1) // 2)], "aggregate")
    check(one(f"SELECT name FROM 's3://{b}/t.parquet' WHERE id = 123456") == [("row-123456",)], "filtered column")


@step("COPY to CSV without a header, read it back")
def _():
    con.execute(f"COPY (SELECT range AS id FROM range(100000)) TO 's3://{b}/n.csv' (HEADER false)")
    check(one(f"SELECT count(*), sum(column0) FROM read_csv('s3://{b}/n.csv', header = false)") == [(100000, 4999950000)], "csv")


@step("glob lists the objects")
def _():
    got = sorted(r[0] for r in one(f"SELECT * FROM glob('s3://{b}/*')"))
    check(got == [f"s3://{b}/n.csv", f"s3://{b}/t.parquet"], f"glob {got}")


@step("a missing object is an error")
def _():
    try:
        one(f"SELECT * FROM 's3://{b}/missing.parquet'")
        check(False, "read succeeded")
    except duckdb.Error:
        pass


finish("duckdb")
