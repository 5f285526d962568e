"""What a fleet pays per million images: the one source of the cost table.

``cost_table(measured)`` renders the table from figures per image (measured by
``benchmarks/pipeline_load.py``) and the price assumptions below; pipeline_load prints it for
its own run, and docs/operations.md shows it for ``RECORDED`` (a test checks that the two
agree). Every price is an assumption, named here and in the table's notes.
"""

from __future__ import annotations

# --- price assumptions (USD) -------------------------------------------------------------------
PRICES = {
    "s3_put_per_1000": 0.005,  # S3 Standard, us-east-1 list price: PUT, COPY, POST, LIST
    "s3_get_per_1000": 0.0004,  # S3 Standard, us-east-1 list price: GET, HEAD and others
    "s3_gb_month": 0.023,  # S3 Standard storage, first 50 TB, per GB-month
    "db_gb_month": 0.115,  # managed PostgreSQL storage (RDS gp3), per GB-month
    "gpu_hour": 4.00,  # one H200 on demand, per hour (an assumed market rate)
}

# --- measured GPU rates (one H200, benchmarks/gpu_suite.sh; benchmarks/records/h200-2026-11-30) --
GPU_RATES = {
    "model + both CAMs": 1477.0,  # images/s
    "whole analysis, one heatmap": 241.0,  # images/s, device preprocessing path
}

# Figures per image of the pipeline_load run recorded in docs/operations.md: --n 2000 with the
# official tiny fixture on the 2-core CPU dev machine (benchmarks/pipeline_load.py's small test
# images: heatmap bytes scale with the image, up to 512 px a side).
RECORDED = {
    "s3_get_per_analysed": 1.0,
    "s3_put_per_analysed": 1.0,
    "s3_requests_per_reused": 1.0,
    "heatmap_bytes_per_analysed": 53_805,
    "db_rows_per_image": 2.05,  # one analyses row, one job_items row (+ failed items)
    "db_bytes_per_image": 3_001,
}

BEFORE = {  # the same figures with six heatmap objects per image and a HEAD before each GET
    "s3_get_per_analysed": 2.0,
    "s3_put_per_analysed": 6.0,
    "s3_requests_per_reused": 2.0,
}

MILLION = 1_000_000
GB = 1e9


def rows(measured: dict) -> list[tuple[str, str, str]]:
    """(item, quantity per million analysed images, cost) rows of the table."""
    m = {**RECORDED, **measured}
    gets = m["s3_get_per_analysed"] * MILLION
    puts = m["s3_put_per_analysed"] * MILLION
    s3_gb = m["heatmap_bytes_per_analysed"] * MILLION / GB
    db_gb = m["db_bytes_per_image"] * MILLION / GB
    out = [
        (
            "S3 GET (ranged, one per image)",
            f"{gets:,.0f}",
            f"${gets / 1000 * PRICES['s3_get_per_1000']:,.2f}",
        ),
        (
            "S3 PUT (one heatmap per image)",
            f"{puts:,.0f}",
            f"${puts / 1000 * PRICES['s3_put_per_1000']:,.2f}",
        ),
        (
            "S3 PUT before (six heatmaps per image)",
            f"{BEFORE['s3_put_per_analysed'] * MILLION:,.0f}",
            f"${BEFORE['s3_put_per_analysed'] * MILLION / 1000 * PRICES['s3_put_per_1000']:,.2f}",
        ),
        ("S3 bytes stored (heatmaps)", f"{s3_gb:,.1f} GB", f"${s3_gb * PRICES['s3_gb_month']:,.2f} / month"),
        ("Database rows", f"{m['db_rows_per_image'] * MILLION:,.0f}", "–"),
        (
            "Database bytes (tables + indexes)",
            f"{db_gb:,.1f} GB",
            f"${db_gb * PRICES['db_gb_month']:,.2f} / month",
        ),
    ]
    for what, rate in GPU_RATES.items():
        seconds = MILLION / rate
        out.append(
            (
                f"GPU-seconds, {what} at {rate:,.0f} images/s",
                f"{seconds:,.0f} s",
                f"${seconds / 3600 * PRICES['gpu_hour']:,.2f}",
            )
        )
    return out


def cost_table(measured: dict | None = None) -> str:
    """The cost table per million analysed images (Markdown), with its assumptions."""
    lines = ["| Per million analysed images | Quantity | Cost (USD) |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows(measured or {})]
    p = PRICES
    lines += [
        "",
        f"Assumptions: S3 Standard (us-east-1) list prices, PUT ${p['s3_put_per_1000']} "
        f"and GET ${p['s3_get_per_1000']} per 1,000 requests, storage "
        f"${p['s3_gb_month']} per GB-month; database storage ${p['db_gb_month']} per "
        f"GB-month (managed PostgreSQL, gp3); one H200 at ${p['gpu_hour']:.2f} per hour. "
        f"A reused image costs {(measured or RECORDED).get('s3_requests_per_reused', 1):g} "
        f"S3 request (its GET) and no write.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(cost_table())
