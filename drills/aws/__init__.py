"""AWS: ``calls`` (one wrapper for every API call: throttling, retries, pagination, tags),
``isolation`` (network checks before a restore), ``backend`` (what RDS and Aurora share),
``rds``, ``aurora``, ``sweep`` (tag-driven removal of expired resources) and ``kms`` (the
evidence signer). boto3 is imported lazily, inside the calls that need it."""
