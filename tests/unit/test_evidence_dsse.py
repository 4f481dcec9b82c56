"""DSSE envelopes and RFC 8785 canonical JSON."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from drills.errors import EvidenceError, VerificationError
from drills.evidence import Signer, Verifier, canonical_json, keyid_for, pae, sign_envelope, verify_envelope


def make_pair() -> tuple[Signer, Verifier]:
    key = ed25519.Ed25519PrivateKey.generate()
    keyid = keyid_for(key.public_key())
    return Signer(keyid, key), Verifier(keyid, key.public_key())


SIGNER, VERIFIER = make_pair()
OTHER_SIGNER, OTHER_VERIFIER = make_pair()


# --------------------------------------------------------------------------- PAE


def test_pae_matches_the_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


# --------------------------------------------------------------------------- envelopes


def test_round_trip() -> None:
    env = sign_envelope(b'{"a":1}', "application/vnd.in-toto+json", SIGNER)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == b'{"a":1}'
    assert env["signatures"][0]["keyid"] == SIGNER.keyid
    assert verify_envelope(env, [VERIFIER]) == b'{"a":1}'
    assert verify_envelope(json.dumps(env), [VERIFIER]) == b'{"a":1}'


def test_signature_covers_the_pae_not_just_the_payload() -> None:
    env = sign_envelope(b"body", "type/a", SIGNER)
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert VERIFIER.verify(sig, pae("type/a", b"body"))
    assert not VERIFIER.verify(sig, b"body")


def test_wrong_key_fails_and_names_both_keyids() -> None:
    env = sign_envelope(b"body", "t", SIGNER)
    with pytest.raises(VerificationError) as info:
        verify_envelope(env, [OTHER_VERIFIER])
    assert "no signature verifies" in str(info.value)
    assert SIGNER.keyid in str(info.value)
    assert OTHER_VERIFIER.keyid in str(info.value)


def test_keyid_is_only_a_hint_every_key_is_tried() -> None:
    env = sign_envelope(b"body", "t", SIGNER)
    env["signatures"][0]["keyid"] = "some-other-name"
    assert verify_envelope(env, [OTHER_VERIFIER, VERIFIER]) == b"body"
    del env["signatures"][0]["keyid"]
    assert verify_envelope(env, [OTHER_VERIFIER, VERIFIER]) == b"body"


def test_strict_mode_rejects_a_wrong_keyid_hint() -> None:
    env = sign_envelope(b"body", "t", SIGNER)
    env["signatures"][0]["keyid"] = OTHER_SIGNER.keyid
    with pytest.raises(VerificationError, match="names keyid"):
        verify_envelope(env, [VERIFIER], strict=True)


def test_strict_mode_requires_every_signature_to_verify() -> None:
    env = sign_envelope(b"body", "t", SIGNER)
    env["signatures"].append(sign_envelope(b"body", "t", OTHER_SIGNER)["signatures"][0])
    assert verify_envelope(env, [VERIFIER]) == b"body"
    with pytest.raises(VerificationError, match=r"signatures\[1\]"):
        verify_envelope(env, [VERIFIER], strict=True)
    assert verify_envelope(env, [VERIFIER, OTHER_VERIFIER], strict=True) == b"body"


def test_changed_payload_type_fails() -> None:
    env = sign_envelope(b"body", "type/a", SIGNER)
    env["payloadType"] = "type/b"
    with pytest.raises(VerificationError, match="no signature verifies"):
        verify_envelope(env, [VERIFIER])


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_changed_payload_byte_fails(payload: bytes, data: st.DataObject) -> None:
    env = sign_envelope(payload, "t", SIGNER)
    index = data.draw(st.integers(0, len(payload) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != payload[index]))
    tampered = payload[:index] + bytes([new]) + payload[index + 1 :]
    env["payload"] = base64.b64encode(tampered).decode()
    with pytest.raises(VerificationError):
        verify_envelope(env, [VERIFIER])


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ("{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[]", "must be a JSON object"),
        ({"payload": "", "signatures": []}, "no 'payloadType' field"),
        ({"payloadType": 3, "payload": "", "signatures": []}, "'payloadType' must be a string"),
        ({"payloadType": "t", "signatures": []}, "no 'payload' field"),
        ({"payloadType": "t", "payload": "not base64!", "signatures": []}, "payload is not standard or URL-safe"),
        ({"payloadType": "t", "payload": "aGk", "signatures": []}, "payload is not standard or URL-safe"),
        ({"payloadType": "t", "payload": "aGl=", "signatures": []}, "not canonical base64"),
        ({"payloadType": "t", "payload": "aGk=", "signatures": []}, "no signatures"),
        ({"payloadType": "t", "payload": "aGk="}, "no signatures"),
        ({"payloadType": "t", "payload": "aGk=", "signatures": ["x"]}, "must be an object"),
        ({"payloadType": "t", "payload": "aGk=", "signatures": [{"keyid": "k"}]}, r"signatures\[0\] has no 'sig'"),
        ({"payloadType": "t", "payload": "aGk=", "signatures": [{"sig": "%%"}]}, r"signatures\[0\]\.sig is not"),
    ],
)
def test_malformed_envelopes_say_what_is_wrong(envelope: object, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        verify_envelope(envelope, [VERIFIER])  # type: ignore[arg-type]


def test_no_keys_given() -> None:
    with pytest.raises(VerificationError, match="no verification key"):
        verify_envelope(sign_envelope(b"x", "t", SIGNER), [])


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_is_independent_of_key_order_and_whitespace() -> None:
    a = {"b": [1, {"y": True, "x": None}], "a": "é", "c": {"z": 1, "a": 2}}
    b = {"c": {"a": 2, "z": 1}, "a": "é", "b": [1, {"x": None, "y": True}]}
    assert canonical_json(a) == canonical_json(b) == '{"a":"é","b":[1,{"x":null,"y":true}],"c":{"a":2,"z":1}}'.encode()


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**53) + 1, 2**53 - 1), max_size=8))
def test_canonical_json_round_trips_and_ignores_insertion_order(obj: dict[str, int]) -> None:
    shuffled = dict(reversed(list(obj.items())))
    assert canonical_json(obj) == canonical_json(shuffled)
    assert json.loads(canonical_json(obj)) == obj


def test_float_is_rejected_with_its_path() -> None:
    with pytest.raises(EvidenceError, match=r"at \$\.results\.timeline\[1\]\.seconds is a float \(1\.5\)"):
        canonical_json({"results": {"timeline": [{"seconds": 1}, {"seconds": 1.5}]}})


def test_integral_float_is_still_rejected() -> None:
    with pytest.raises(EvidenceError, match="float"):
        canonical_json({"rto_ms": 1000.0})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"n": 2**53}, "outside the exact JSON range"),
        ({"b": b"x"}, "type bytes"),
        ({1: "x"}, "non-string key"),
        ({"s": {1, 2}}, "type set"),
    ],
)
def test_values_json_cannot_carry_exactly_are_rejected(value: object, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        canonical_json(value)


def test_strict_mode_rejects_unknown_fields() -> None:
    env = sign_envelope(b"body", "t", SIGNER)
    env["signatures"][0]["keyId"] = env["signatures"][0].pop("keyid")
    assert verify_envelope(env, [VERIFIER]) == b"body"
    with pytest.raises(VerificationError, match=r"signatures\[0\] has unexpected field\(s\) 'keyId'"):
        verify_envelope(env, [VERIFIER], strict=True)
    env = sign_envelope(b"body", "t", SIGNER) | {"extra": 1}
    with pytest.raises(VerificationError, match="envelope has unexpected field"):
        verify_envelope(env, [VERIFIER], strict=True)
