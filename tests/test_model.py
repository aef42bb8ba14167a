"""The session model and the shared codec: validation, round trips, bad bytes."""

from __future__ import annotations

import math
import string
import unicodedata
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sessionkeeper import InvalidSession, Session, generate_id, validate_id
from sessionkeeper.backend import FORMAT_VERSION, CodecError, decode_session, encode_session

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


#: Owners: any str of 1..256 UTF-8 bytes without a control character (category Cc).
owners = st.none() | st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64
).filter(lambda owner: len(owner.encode("utf-8")) <= 256)
versions = st.integers(min_value=1, max_value=2**63 - 1)


def odd_metadata() -> st.SearchStrategy[Any]:
    """Dicts of what msgpack can pack and JSON cannot always hold (floats, bytes, non-str keys,
    strings whose bytes look like msgpack types, deep nesting)."""
    return st.dictionaries(
        st.text(max_size=4) | st.binary(max_size=2) | st.integers(-2, 2) | st.none(),
        st.recursive(
            st.one_of(
                json_scalars,
                st.floats(),
                st.binary(max_size=3),
                st.text(alphabet="éЖ€"),
            ),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(
                    st.text(max_size=3) | st.binary(max_size=1) | st.integers(0, 2),
                    children,
                    max_size=3,
                )
            ),
            max_leaves=40,
        ),
        max_size=4,
    ) | st.integers(min_value=1, max_value=60).map(lambda depth: nested(depth))


def nested(depth: int) -> dict[str, Any]:
    """Metadata nesting ``depth`` maps (the depth limit is 32)."""
    metadata: dict[str, Any] = {}
    for _ in range(depth - 1):
        metadata = {"k": metadata}
    return metadata


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    created = draw(times)
    return Session(
        draw(ids),
        created,
        created + draw(st.integers(min_value=0, max_value=2**40)),
        draw(timeouts),
        draw(metadatas),
        version=draw(versions),
        owner=draw(owners),
        absolute_timeout_ms=draw(timeouts),
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
            version=session.version,
            owner=session.owner,
            absolute_timeout_ms=session.absolute_timeout_ms,
        )
        assert rebuilt == session
        assert rebuilt.to_dict() == session.to_dict()
        assert Session(**session.to_dict()) == session

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
                msgpack.packb([3, "a", 1, 1, None, msgpack.packb({}), 1, None, None]),
                "unsupported record format version 3 (this sessionkeeper reads versions 1 to 2)",
            ),
            (msgpack.packb([0, "a", 1, 1, None, b"\x80"]), "unsupported record format version 0"),
            (msgpack.packb([True, "a", 1, 1, None, b"\x80"]), "format version True"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80"]), "version 2 record has 6 fields"),
            (
                msgpack.packb([1, "a", 1, 1, None, b"\x80", 1, None, None]),
                "version 1 record has 9 fields, expected 6",
            ),
            (
                msgpack.packb([2, "a", 1, 1, None, b"\x80", 0, None, None]),
                "invalid session version",
            ),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", -1, None, None]), "version"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 2**63, None, None]), "2**63-1"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1.0, None, None]), "version"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, "", None]), "owner"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, "a\nb", None]), "control"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, 7, None]), "field owner is int"),
            (
                msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, b"bin", None], use_bin_type=True),
                "field owner is bytes",
            ),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, "é" * 129, None]), "258 bytes"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, None, 0]), "absolute_timeout_ms"),
            (msgpack.packb([2, "a", 1, 1, None, b"\x80", 1, None, "9"]), "absolute_timeout_ms"),
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

    @given(odd_metadata())
    @example({"x": math.nan})
    @example({"x": [1, {"y": -math.inf}]})
    @example({"k": b""})
    @example({b"k": 1})
    @example({"é": 1.5, "n": 2**64 - 1})
    @example(nested(32))
    @example(nested(33))
    def test_decode_judges_metadata_exactly_as_the_full_check(self, metadata: dict) -> None:
        """A record whose metadata holds anything msgpack can (bytes, NaN, non-str keys, deep
        nesting, strings whose bytes look like msgpack types) decodes exactly when the full
        JSON check accepts that metadata — the scan that skips the check never lets one
        through — and to that metadata."""
        blob = msgpack.packb(metadata, use_bin_type=True)
        record = msgpack.packb([2, "a", 1, 1, None, blob, 1, None, None], use_bin_type=True)
        try:
            Session("a", 1, 1, None, msgpack.unpackb(blob, raw=False, strict_map_key=False))
        except InvalidSession:
            with pytest.raises(CodecError, match="metadata"):
                decode_session(record)
        else:
            assert decode_session(record).metadata == msgpack.unpackb(blob, raw=False)

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


#: A record written by the version-1 encoder (sessionkeeper before issue 14), byte for byte.
V1_RECORD = (
    b"\x96\x01\xaav1-fixture\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5{\x88"
    b"\xcd\xea`\xc4!\x82\xa7user_id\xa8user_456\xa1n\x94\x01\xcb@\x04\x00\x00\x00\x00\x00\x00"
    b"\xc0\xc3"
)
#: The same encoder's record of a session without a timeout and with empty metadata.
V1_RECORD_FOREVER = b"\x96\x01\xaav1-forever\x00\x07\xc0\xc4\x01\x80"
#: A version-2 record, pinned so that a change of the format is noticed (and versioned).
V2_RECORD = (
    b"\x99\x02\xaav2-fixture\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5{\x88"
    b"\xcd\xea`\xc4\x12\x81\xa7user_id\xa8user_456\x07\xa8user_456\xce\x01\xb7t\x00"
)


class TestRecordFormats:
    def test_version_1_records_still_decode(self) -> None:
        """Bytes written by the version-1 encoder decode as version 1, without an owner and
        without an absolute timeout, every other field exact."""
        session = decode_session(V1_RECORD)
        assert session == Session(
            "v1-fixture",
            1_700_000_000_000,
            1_700_000_005_000,
            60_000,
            {"user_id": "user_456", "n": [1, 2.5, None, True]},
        )
        assert (session.version, session.owner, session.absolute_timeout_ms) == (1, None, None)
        forever = decode_session(V1_RECORD_FOREVER)
        assert forever == Session("v1-forever", 0, 7, None, {})
        assert forever.version == 1

    def test_version_1_records_are_rewritten_as_version_2(self) -> None:
        """Encoding a session read from a version-1 record writes the current format, which
        decodes to the same session."""
        session = decode_session(V1_RECORD)
        record = encode_session(session)
        assert record[:2] == b"\x99\x02"
        assert decode_session(record) == session

    def test_version_2_record_is_pinned(self) -> None:
        """The current encoder writes exactly the pinned version-2 bytes for a known session,
        and they decode back to it."""
        session = Session(
            "v2-fixture",
            1_700_000_000_000,
            1_700_000_005_000,
            60_000,
            {"user_id": "user_456"},
            version=7,
            owner="user_456",
            absolute_timeout_ms=8 * 3_600_000,
        )
        assert FORMAT_VERSION == 2
        assert encode_session(session) == V2_RECORD
        assert decode_session(V2_RECORD) == session


class TestConcurrencyFields:
    def test_defaults(self) -> None:
        """Without the keyword-only fields a session is version 1, has no owner and no
        absolute timeout."""
        session = Session("a", 1, 1)
        assert (session.version, session.owner, session.absolute_timeout_ms) == (1, None, None)
        with pytest.raises(TypeError):
            Session("a", 1, 1, None, None, 2)  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("version", "wording"),
        [
            (0, "1..2**63-1"),
            (-1, "1..2**63-1"),
            (2**63, "1..2**63-1"),
            (True, "bool"),
            (1.0, "float"),
        ],
    )
    def test_bad_versions_are_rejected(self, version: Any, wording: str) -> None:
        """version is an int in 1..2**63-1; anything else is InvalidSession naming the field."""
        with pytest.raises(InvalidSession, match="invalid session version") as info:
            Session("a", 1, 1, version=version)
        assert wording in str(info.value)
        assert info.value.field == "version"

    @pytest.mark.parametrize(
        ("owner", "wording"),
        [
            ("", "must not be empty"),
            ("a\x00b", "control character '\\x00' at 1"),
            ("tab\t", "control character"),
            ("del\x7f", "control character"),
            ("c1\x85", "control character"),
            ("x" * 257, "257 bytes in UTF-8, over the 256 limit"),
            ("\u00e9" * 129, "258 bytes"),
            ("\ud800", "cannot be encoded as UTF-8"),
            (42, "must be a str or None, got int"),
            (b"user", "got bytes"),
        ],
    )
    def test_bad_owners_are_rejected(self, owner: Any, wording: str) -> None:
        """owner is None or a non-empty str without control characters, at most 256 bytes of
        UTF-8; anything else is InvalidSession naming the field and the reason."""
        with pytest.raises(InvalidSession, match="invalid session owner") as info:
            Session("a", 1, 1, owner=owner)
        assert wording in str(info.value)
        assert info.value.field == "owner"

    def test_edge_owners_are_accepted(self) -> None:
        """256 bytes, spaces, any printable non-ASCII text and format characters are owners;
        a str subclass is stored as a plain str."""

        class Name(str):
            pass

        for owner in ("x" * 256, "\u00e9" * 128, "user 456", "\u4e2d\u6587", "a\u200bb", "@"):
            assert Session("a", 1, 1, owner=owner).owner == owner
        stored = Session("a", 1, 1, owner=Name("alice")).owner
        assert type(stored) is str
        assert stored == "alice"

    def test_control_characters_are_exactly_category_cc(self) -> None:
        """The owner rule refuses exactly the code points of Unicode category Cc."""
        from sessionkeeper._model import _CONTROL

        for code in range(0x110000):
            char = chr(code)
            if 0xD800 <= code <= 0xDFFF:
                continue
            is_cc = unicodedata.category(char) == "Cc"
            assert (_CONTROL.search(char) is not None) is is_cc, hex(code)

    @pytest.mark.parametrize(
        ("value", "wording"),
        [(0, "must be > 0"), (-1, "must be > 0"), (1.5, "float"), (False, "bool"), ("9", "str")],
    )
    def test_bad_absolute_timeouts_are_rejected(self, value: Any, wording: str) -> None:
        """absolute_timeout_ms is a positive int or None."""
        with pytest.raises(InvalidSession, match="invalid session absolute_timeout_ms") as info:
            Session("a", 1, 1, absolute_timeout_ms=value)
        assert wording in str(info.value)

    def test_absolute_expiry_is_counted_from_creation_strictly(self) -> None:
        """An absolute timeout expires the session once now - created_at > absolute_timeout_ms,
        however recent the last access; equal is still live."""
        session = Session("a", 1_000, 1_900, None, absolute_timeout_ms=1_000)
        assert not session.is_expired(2_000)
        assert session.is_expired(2_001)
        assert session.touched(2_000).is_expired(2_001)
        assert session.expires_at == session.absolute_expires_at == 2_000
        assert session.idle_expires_at is None

    def test_expires_at_is_the_earlier_deadline(self) -> None:
        """expires_at is the earlier of the idle and the absolute deadline, and a touch moves
        it only later or not at all."""
        session = Session("a", 0, 0, 100, absolute_timeout_ms=250)
        assert (session.idle_expires_at, session.absolute_expires_at) == (100, 250)
        assert session.expires_at == 100
        previous = session.expires_at
        for now in (50, 120, 180, 240, 260):
            session = session.touched(now)
            assert session.expires_at >= previous
            previous = session.expires_at
        assert session.expires_at == 250
        assert session.is_expired(251)
        assert not Session("b", 0, 0, None).is_expired(2**62)
        assert Session("b", 0, 0, None).expires_at is None

    @given(sessions(), st.integers(min_value=0, max_value=2**63 - 1))
    def test_is_expired_agrees_with_both_deadlines(self, session: Session, now: int) -> None:
        """is_expired(now) is exactly: past the idle deadline or past the absolute deadline."""
        idle, absolute = session.idle_expires_at, session.absolute_expires_at
        expected = (idle is not None and now > idle) or (absolute is not None and now > absolute)
        assert session.is_expired(now) is expected
        deadline = session.expires_at
        assert expected is (deadline is not None and now > deadline)

    def test_touch_and_with_version_keep_every_other_field(self) -> None:
        """touched() changes only last_accessed; with_version() only the version."""
        session = Session("a", 5, 10, 100, {"k": 1}, version=3, owner="o", absolute_timeout_ms=9)
        touched = session.touched(20)
        assert touched.to_dict() == {**session.to_dict(), "last_accessed": 20}
        bumped = session.with_version(4)
        assert bumped.to_dict() == {**session.to_dict(), "version": 4}
        assert session.version == 3

    def test_replace_accepts_and_validates_the_new_fields(self) -> None:
        """replace() changes version, owner and absolute_timeout_ms, validated."""
        session = Session("a", 1, 1)
        changed = session.replace(version=9, owner="bob", absolute_timeout_ms=60_000)
        assert (changed.version, changed.owner, changed.absolute_timeout_ms) == (9, "bob", 60_000)
        with pytest.raises(InvalidSession, match="owner"):
            session.replace(owner="")
        with pytest.raises(InvalidSession, match="version"):
            session.replace(version=0)

    def test_equality_includes_the_new_fields(self) -> None:
        """Sessions that differ only in version, owner or absolute timeout are not equal."""
        base = Session("a", 1, 1, None, {"k": 1})
        assert base == Session("a", 1, 1, None, {"k": 1}, version=1)
        assert base != base.with_version(2)
        assert base != base.replace(owner="o")
        assert base != base.replace(absolute_timeout_ms=5)
        assert "version=1" in repr(base)
        assert "owner=None" in repr(base)
