from rupost.db.migrations.env_common import run
from rupost.db.models import METADATA

run(METADATA["logs"])
