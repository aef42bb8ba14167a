"""The session model and the shared codec (DESIGN §2, §3): validation, round trips, bad bytes."""

from __future__ import annotations

import math
import string
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionkeeper import (
    CodecError,
    InvalidSession,
    Session,
    decode_session,
    encode_session,
    generate_id,
    validate_id,
)

VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))

ids = st.text(alphabet=VISIBLE, min_size=1, max_size=256)
times = st.integers(min_value=0, max_value=2**62)
timeouts = st.none() | st.integers(min_value=1, max_value=2**62)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
metadatas = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    created = draw(times)
    return Session(
        draw(ids),
        created,
        created + draw(st.integers(min_value=0, max_value=2**40)),
        draw(timeouts),
        draw(metadatas),
    )


class TestSessionValidation:
    @given(sessions())
    def test_valid_sessions_keep_every_field(self, session: Session) -> None:
        """A session built from valid values keeps them exactly, metadata included."""
        rebuilt = Session(
            session.id,
            session.created_at,
            session.last_accessed,
            session.timeout_ms,
            session.metadata,
        )
        assert rebuilt == session
        assert rebuilt.to_dict() == session.to_dict()

    @pytest.mark.parametrize(
        ("bad_id", "wording"),
        [
            ("", "must not be empty"),
            ("x" * 257, "257 characters long"),
            ("caf\u00e9", "only visible ASCII"),
            ("a b", "' '"),
            ("tab\there", "'\\t'"),
            ("nul\x00", "'\\x00'"),
            ("del\x7f", "'\\x7f'"),
            ("new\nline", "'\\n'"),
            (42, "must be a str"),
            (None, "must be a str"),
        ],
    )
    def test_bad_ids_are_rejected_with_the_reason(self, bad_id: Any, wording: str) -> None:
        """Ids outside 1–256 characters of 0x21–0x7E are rejected, and the message says why."""
        with pytest.raises(InvalidSession, match="invalid session id") as info:
            Session(bad_id, 1, 1)
        assert wording in str(info.value)
        assert info.value.field == "id"
        with pytest.raises(InvalidSession):
            validate_id(bad_id)

    def test_edge_ids_are_accepted(self) -> None:
        """One character, 256 characters and every visible ASCII character are valid ids."""
        for good in ("a", "x" * 256, VISIBLE, "\"'\\`"):
            assert Session(good, 0, 0).id == good

    @pytest.mark.parametrize(
        ("timeout", "wording"),
        [(0, "must be > 0"), (-5, "must be > 0"), (1.5, "float"), (True, "bool"), ("10", "str")],
    )
    def test_bad_timeouts_are_rejected(self, timeout: Any, wording: str) -> None:
        """timeout_ms must be a positive int or None; anything else names the field."""
        with pytest.raises(InvalidSession, match="timeout_ms") as info:
            Session("a", 1, 1, timeout)
        assert wording in str(info.value)

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("created_at", {"created_at": -1}),
            ("created_at", {"created_at": 1.0}),
            ("last_accessed", {"last_accessed": "now"}),
            ("last_accessed", {"created_at": 10, "last_accessed": 9}),
            ("created_at", {"created_at": 2**63}),
        ],
    )
    def test_bad_times_are_rejected(self, field: str, kwargs: dict[str, Any]) -> None:
        """Times are ints in 0..2**63-1 ms and last_accessed is not before created_at."""
        values = {"id": "a", "created_at": 1, "last_accessed": 1, **kwargs}
        with pytest.raises(InvalidSession, match=field):
            Session(**values)

    @pytest.mark.parametrize(
        ("metadata", "wording"),
        [
            ({"k": b"bytes"}, "bytes is not JSON-compatible"),
            ({"k": {1, 2}}, "set is not JSON-compatible"),
            ({"k": object()}, "object is not JSON-compatible"),
            ({1: "int key"}, "keys must be str"),
            ({"k": {(1, 2): "tuple key"}}, "keys must be str"),
            ({"k": math.nan}, "nan is not a JSON number"),
            ({"k": [math.inf]}, "inf is not a JSON number"),
            ({"k": 2**64}, "does not fit in 64 bits"),
            ({"k": "\ud800"}, "cannot be encoded"),
            (["not", "a", "dict"], "must be a dict"),
            ("text", "must be a dict"),
        ],
    )
    def test_non_json_metadata_is_rejected(self, metadata: Any, wording: str) -> None:
        """Metadata that JSON cannot carry is rejected, naming where in the metadata it is."""
        with pytest.raises(InvalidSession, match="metadata") as info:
            Session("a", 1, 1, None, metadata)
        assert wording in str(info.value)

    def test_deeply_nested_metadata_is_rejected(self) -> None:
        """Metadata nested deeper than 32 levels is rejected with a clear message."""
        nested: dict[str, Any] = {}
        for _ in range(40):
            nested = {"x": nested}
        with pytest.raises(InvalidSession, match="nested deeper than 32 levels"):
            Session("a", 1, 1, None, nested)

    def test_metadata_reads_are_copies(self) -> None:
        """Changing the dict read from .metadata does not change the session."""
        session = Session("a", 1, 1, None, {"roles": ["admin"]})
        session.metadata["roles"].append("root")
        copy = session.metadata
        copy["new"] = 1
        assert session.metadata == {"roles": ["admin"]}

    def test_sessions_are_immutable(self) -> None:
        """Assigning a field raises; replace() builds a validated copy."""
        session = Session("a", 1, 1, 10)
        with pytest.raises(AttributeError):
            session.timeout_ms = 5  # type: ignore[misc]
        assert session.replace(timeout_ms=5).timeout_ms == 5
        with pytest.raises(InvalidSession):
            session.replace(timeout_ms=0)
        with pytest.raises(TypeError, match="no field"):
            session.replace(colour="red")

    def test_expiry_is_strictly_greater(self) -> None:
        """Expired means now - last_accessed > timeout_ms: equal is still live."""
        session = Session("a", 0, 1000, 500)
        assert not session.is_expired(1500)
        assert session.is_expired(1501)
        assert session.expires_at == 1500
        assert not Session("b", 0, 0, None).is_expired(2**62)

    def test_equal_metadata_in_another_key_order_is_equal(self) -> None:
        """Equality compares metadata as dicts, whatever order the keys were given in."""
        assert Session("a", 1, 1, None, {"x": 1, "y": 2}) == Session(
            "a", 1, 1, None, {"y": 2, "x": 1}
        )
        assert Session("a", 1, 1, None, {"x": 1}) != Session("a", 1, 1, None, {"x": 2})

    def test_generated_ids_are_valid_and_unique(self) -> None:
        """Generated ids carry 256 bits (43 URL-safe characters) and are valid ids."""
        generated = {generate_id() for _ in range(1000)}
        assert len(generated) == 1000
        for value in generated:
            assert len(value) == 43
            assert validate_id(value) == value


class TestCodec:
    @given(sessions())
    def test_round_trip_is_exact(self, session: Session) -> None:
        """decode(encode(s)) == s for every valid session, field by field."""
        decoded = decode_session(encode_session(session))
        assert decoded == session
        assert decoded.metadata == session.metadata
        assert decoded.timeout_ms == session.timeout_ms

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_never_crash(self, data: bytes) -> None:
        """Random bytes either decode to a valid session or raise CodecError, nothing else."""
        try:
            session = decode_session(data)
        except CodecError:
            return
        assert isinstance(session, Session)

    @given(sessions(), st.data())
    def test_truncated_records_are_rejected(self, session: Session, data: st.DataObject) -> None:
        """Any strict prefix of a record raises CodecError."""
        record = encode_session(session)
        cut = data.draw(st.integers(min_value=0, max_value=len(record) - 1))
        with pytest.raises(CodecError):
            decode_session(record[:cut])

    @pytest.mark.parametrize(
        ("record", "wording"),
        [
            (
                msgpack.packb([2, "a", 1, 1, None, msgpack.packb({})]),
                "unsupported record format version 2",
            ),
            (
                msgpack.packb(["1", "a", 1, 1, None, b"\x80"]),
                "unsupported record format version '1'",
            ),
            (msgpack.packb([1, "a", 1, 1, None]), "has 5 fields, expected 6"),
            (msgpack.packb([1, "a b", 1, 1, None, b"\x80"]), "invalid session id"),
            (msgpack.packb([1, "a", -1, 1, None, b"\x80"]), "created_at"),
            (msgpack.packb([1, "a", 5, 1, None, b"\x80"]), "before created_at"),
            (msgpack.packb([1, "a", 1, 1, 0, b"\x80"]), "timeout_ms"),
            (msgpack.packb([1, "a", 1, 1, None, "not bin"]), "expected msgpack bin"),
            (msgpack.packb([1, "a", 1, 1, None, msgpack.packb([1])]), "expected a map"),
            (
                msgpack.packb([1, "a", 1, 1, None, msgpack.packb({"k": b"x"}, use_bin_type=True)]),
                "bytes is not JSON-compatible",
            ),
            (
                msgpack.packb([1, "a", 1, 1, None, msgpack.packb({"k": math.nan})]),
                "not a JSON number",
            ),
            (msgpack.packb({"id": "a"}), "expected a msgpack array"),
            (b"\x80\x04\x95", "not a msgpack record"),  # the start of a pickle
        ],
    )
    def test_foreign_and_corrupt_records_name_the_problem(
        self, record: bytes, wording: str
    ) -> None:
        """Records of another version, with missing or mistyped fields, or not msgpack at all,
        raise CodecError saying what is wrong."""
        with pytest.raises(CodecError) as info:
            decode_session(record)
        assert wording in str(info.value)

    def test_non_bytes_input_is_rejected(self) -> None:
        """decode_session of something that is not bytes raises CodecError."""
        with pytest.raises(CodecError, match="expected bytes"):
            decode_session("text")  # type: ignore[arg-type]

    def test_encode_rejects_non_sessions(self) -> None:
        """encode_session of a dict raises TypeError naming what it got."""
        with pytest.raises(TypeError, match="expected a Session, got dict"):
            encode_session({"id": "a"})  # type: ignore[arg-type]

    @given(st.text(alphabet=string.printable))
    def test_metadata_strings_round_trip(self, text: str) -> None:
        """Any encodable string value survives the codec unchanged."""
        session = Session("a", 1, 1, None, {"v": text})
        assert decode_session(encode_session(session)).metadata == {"v": text}
