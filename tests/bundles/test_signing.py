"""Signed bundles against the real OPA: the signed bundle loads, a changed byte or a wrong
key is refused."""

from __future__ import annotations

import io
import tarfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from regate import compiler
from regate.cli import main
from tests.support.enforcer import ROOT
from tests.support.opa import OpaServer, OpaStartError

EXAMPLE = ROOT / "examples" / "regate.yaml"


def write_keypair(tmp_path, kind: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS256" \
        else ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / f"{kind}-private.pem"
    public = tmp_path / f"{kind}-public.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def opa_refuses(opa_bin, bundle, public_key, alg) -> str:
    """Start `opa run --server` verifying the bundle's signature; OPA's error when it refuses to load it."""
    server = OpaServer(opa_bin, bundle=str(bundle), extra_args=("--verification-key", str(public_key), "--signing-alg", alg))
    with pytest.raises(OpaStartError) as refused:
        server.start()
        server.stop()
    return str(refused.value)


def retar(bundle, out, change):
    """Copy a bundle tarball, passing each member's bytes through `change(name, data)`."""
    src = tarfile.open(bundle)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return out


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_signed_bundle_loads_in_opa(opa_bin, tmp_path, alg):
    private, public = write_keypair(tmp_path, alg)
    bundle = tmp_path / "signed.tar.gz"
    assert main(["compile", str(EXAMPLE), "-o", str(bundle), "--signing-key", str(private)]) == 0
    with OpaServer(opa_bin, bundle=str(bundle), extra_args=("--verification-key", str(public), "--signing-alg", alg)) as opa:
        decision = opa.decide({"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}})
        assert decision["reasons"] == ["missing_credential"]


@pytest.mark.parametrize("target", ["/regate/roles.rego", "/regate/tables/data.json", "/.manifest"])
def test_one_changed_byte_is_refused(opa_bin, tmp_path, target):
    private, public = write_keypair(tmp_path, "RS256")
    bundle = tmp_path / "signed.tar.gz"
    assert main(["compile", str(EXAMPLE), "-o", str(bundle), "--signing-key", str(private)]) == 0

    def flip(name, data):
        if name != target:
            return data
        i = data.index(b"e")  # inside a string, so the file still parses
        return data[:i] + b"E" + data[i + 1:]

    tampered = retar(bundle, tmp_path / "tampered.tar.gz", flip)
    assert "digest mismatch" in opa_refuses(opa_bin, tampered, public, "RS256")


def test_wrong_key_is_refused(opa_bin, tmp_path):
    private, _ = write_keypair(tmp_path, "RS256")
    other = tmp_path / "other"
    other.mkdir()
    _, other_public = write_keypair(other, "RS256")
    bundle = tmp_path / "signed.tar.gz"
    assert main(["compile", str(EXAMPLE), "-o", str(bundle), "--signing-key", str(private)]) == 0
    assert "failed to verify JWT signature" in opa_refuses(opa_bin, bundle, other_public, "RS256")


def test_unsigned_bundle_is_refused_when_verification_is_on(opa_bin, tmp_path):
    _, public = write_keypair(tmp_path, "RS256")
    bundle = tmp_path / "unsigned.tar.gz"
    assert main(["compile", str(EXAMPLE), "-o", str(bundle)]) == 0
    assert "missing .signatures.json" in opa_refuses(opa_bin, bundle, public, "RS256")


def test_rs256_signed_bundles_are_deterministic(tmp_path):
    private, _ = write_keypair(tmp_path, "RS256")
    config = compiler.load_config(EXAMPLE)
    one = compiler.bundle.tarball(compiler.bundle_files(config, signing_key=private))
    two = compiler.bundle.tarball(compiler.bundle_files(config, signing_key=private))
    assert one == two


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.write_text("not a key"), "not an unencrypted PEM private key"),
    (None, "cannot read signing key: No such file or directory"),
])
def test_bad_signing_key_is_a_clear_error(tmp_path, monkeypatch, capsys, setup, message):
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "key.pem"
    if setup:
        setup(key)
    assert main(["compile", str(EXAMPLE), "-o", "b.tar.gz", "--signing-key", "key.pem"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b.tar.gz").exists()


def test_algorithm_must_fit_the_key(tmp_path, capsys):
    private, _ = write_keypair(tmp_path, "ES256")
    assert main(["compile", str(EXAMPLE), "-o", str(tmp_path / "b.tar.gz"), "--signing-key", str(private),
                 "--signing-alg", "RS256"]) == 2
    assert "RS256 needs an RSA key" in capsys.readouterr().err
