"""The standalone verification script in docs/evidence.md must keep working: auditors copy it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

from drills.evidence import generate_keypair, load_signer, subject_for_bytes, write_evidence

DOC = Path(__file__).resolve().parents[2] / "docs" / "evidence.md"


def _run(script: Path, evidence: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(evidence), str(key)], capture_output=True, text=True, check=False
    )


def test_documented_offline_verifier_accepts_good_and_rejects_tampered_evidence(tmp_path: Path) -> None:
    snippet = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    script = tmp_path / "verify_evidence.py"
    script.write_text(snippet)
    generate_keypair(tmp_path / "k.key")
    generate_keypair(tmp_path / "other.key")
    path = write_evidence(
        {"drill": {"id": "run-7"}}, [subject_for_bytes("rb", b"x")], tmp_path, "run-7", load_signer(tmp_path / "k.key")
    )

    good = _run(script, path, tmp_path / "k.pub")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == {"drill": {"id": "run-7"}}

    assert _run(script, path, tmp_path / "other.pub").returncode == 1

    envelope = json.loads(path.read_text())
    payload = base64.b64decode(envelope["payload"]).replace(b"run-7", b"run-8")
    envelope["payload"] = base64.b64encode(payload).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(envelope))
    result = _run(script, tampered, tmp_path / "k.pub")
    assert result.returncode == 1
    assert "NOT VERIFIED" in result.stderr
