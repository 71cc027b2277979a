"""Alembic migrations of the records schema (harness/records.py).

Applied by `harness.records.RecordStore` when it opens a database; no alembic.ini needed.
To write a new revision against a scratch database:

    python -c "from alembic import command; from harness.records import alembic_config; \
command.revision(alembic_config('sqlite:///scratch.sqlite'), 'what changed', autogenerate=True)"

(upgrade the scratch database first). Review the generated file; keep revisions additive.
"""
