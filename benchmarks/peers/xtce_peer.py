"""space_packet_parser: the frame as an XTCE document (CCSDS 660.0 / OMG XTCE 1.2).

Each parameter has its own ParameterType: FloatParameterType with an IntegerDataEncoding
and a PolynomialCalibrator or a first-order SplineCalibrator (table points extended to the
raw range's ends, so it holds the end values as np.interp does), EnumeratedParameterType for
discretes, and a DefaultAlarm (StaticAlarmRanges WarningRange/CriticalRange, or an
EnumerationAlarmList) for limits.

No CCSDS header is needed, and none is faked: space_packet_parser 6 parses raw bytes from
any root container (`parse_bytes(data, root_container_name=...)`); XTCE itself knows nothing
of CCSDS. XTCE containers are sequential (space_packet_parser has no
LocationInContainerInBits), so gaps become spare entries. Subcommutation is done the XTCE
way: a base container holds the sync words and the frame ID, and one inheriting container
per frame-ID value (RestrictionCriteria on FRAME_ID) lays out the rest of that minor frame.

space_packet_parser does not evaluate alarms, so the adapter reads the DefaultAlarm ranges
back from the same XTCE document and checks each batch's values with numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from numpy.typing import NDArray

from ._common import RED, YELLOW, FieldSpec, FrameSpec, PeerResult, minor_of, rows_for

NS = "http://www.omg.org/spec/XTCE/20180204"
ROOT = "MinorFrame"


def _range(tag: str, pair: tuple[float | None, float | None] | None) -> str:
    if pair is None or pair == (None, None):
        return ""
    attrs = ""
    if pair[0] is not None:
        attrs += f' minInclusive="{float(pair[0])!r}"'
    if pair[1] is not None:
        attrs += f' maxInclusive="{float(pair[1])!r}"'
    return f"<xtce:{tag}{attrs}/>"


def _ptype(f: FieldSpec) -> str:
    enc_open = f'<xtce:IntegerDataEncoding sizeInBits="{f.bit_size}" encoding="unsigned"'
    name = quoteattr(f"{f.id}_Type")
    if f.type == "discrete":
        enums = "".join(f'<xtce:Enumeration value="{c}" label={quoteattr(s)}/>'
                        for c, s in sorted(f.full_states().items()))
        alarms = "".join(
            f'<xtce:EnumerationAlarm alarmLevel="{lvl}" enumerationLabel={quoteattr(s)}/>'
            for lvl, names in (("warning", f.yellow_states), ("critical", f.red_states))
            for s in names)
        alarm = (f"<xtce:DefaultAlarm><xtce:EnumerationAlarmList>{alarms}"
                 "</xtce:EnumerationAlarmList></xtce:DefaultAlarm>") if alarms else ""
        return (f"<xtce:EnumeratedParameterType name={name}>{enc_open}/>"
                f"<xtce:EnumerationList>{enums}</xtce:EnumerationList>{alarm}"
                "</xtce:EnumeratedParameterType>")
    if f.table:
        points = f.table_clamped()
        # space_packet_parser 6.2 fails on a query equal to the last point's raw value
        # (it looks for a point strictly above it): repeat the end value one count beyond.
        points.append((points[-1][0] + 1.0, points[-1][1]))
        pts = "".join(f'<xtce:SplinePoint raw="{r!r}" calibrated="{e!r}"/>'
                      for r, e in points)
        cal = f'<xtce:SplineCalibrator order="1" extrapolate="false">{pts}</xtce:SplineCalibrator>'
    else:
        terms = "".join(f'<xtce:Term coefficient="{float(a)!r}" exponent="{k}"/>'
                        for k, a in enumerate(f.poly))
        cal = f"<xtce:PolynomialCalibrator>{terms}</xtce:PolynomialCalibrator>"
    unit = (f"<xtce:UnitSet><xtce:Unit>{f.unit}</xtce:Unit></xtce:UnitSet>"
            if f.unit and f.unit != "state" else "")
    ranges = _range("WarningRange", f.yellow) + _range("CriticalRange", f.red)
    alarm = (f"<xtce:DefaultAlarm><xtce:StaticAlarmRanges>{ranges}</xtce:StaticAlarmRanges>"
             "</xtce:DefaultAlarm>") if ranges else ""
    return (f"<xtce:FloatParameterType name={name}>{unit}{enc_open}>"
            f"<xtce:DefaultCalibrator>{cal}</xtce:DefaultCalibrator>"
            f"</xtce:IntegerDataEncoding>{alarm}</xtce:FloatParameterType>")


def xtce_document(spec: FrameSpec) -> str:
    """The frame as an XTCE SpaceSystem, subcommutation as containers keyed on FRAME_ID."""
    c = spec.counter
    total = spec.nbytes * 8
    types: list[str] = []
    params: list[str] = []
    spares: set[int] = set()

    def spare(off: int, size: int) -> str:
        spares.add(size)
        params.append(f'<xtce:Parameter name="SPARE_{off}_{size}" '
                      f'parameterTypeRef="SPARE{size}_Type"/>')
        return f'<xtce:ParameterRefEntry parameterRef="SPARE_{off}_{size}"/>'

    def layout(fields: list[FieldSpec], start: int, end: int) -> list[str]:
        out, pos = [], start
        for f in sorted(fields, key=lambda x: x.bit_offset):
            if f.bit_offset > pos:
                out.append(spare(pos, f.bit_offset - pos))
            out.append(f'<xtce:ParameterRefEntry parameterRef={quoteattr(f.id)}/>')
            pos = f.bit_offset + f.bit_size
        if end > pos:
            out.append(spare(pos, end - pos))
        return out

    for f in spec.fields:
        types.append(_ptype(f))
        params.append(f'<xtce:Parameter name={quoteattr(f.id)} '
                      f'parameterTypeRef={quoteattr(f.id + "_Type")}/>')
    types.append(f'<xtce:IntegerParameterType name="FRAME_ID_Type" signed="false">'
                 f'<xtce:IntegerDataEncoding sizeInBits="{c.bit_size}" encoding="unsigned"/>'
                 "</xtce:IntegerParameterType>")
    params.append('<xtce:Parameter name="FRAME_ID" parameterTypeRef="FRAME_ID_Type"/>')

    head_end = c.bit_offset + c.bit_size
    head = [f for f in spec.fields if f.bit_offset + f.bit_size <= head_end]
    rest = [f for f in spec.fields if f not in head]
    base = layout(head, 0, c.bit_offset)
    base.append('<xtce:ParameterRefEntry parameterRef="FRAME_ID"/>')
    containers: list[str] = []
    subcom = any(f.frames is not None for f in rest)
    if not subcom:
        base += layout(rest, head_end, total)
        containers.append(f'<xtce:SequenceContainer name="{ROOT}"><xtce:EntryList>'
                          + "".join(base) + "</xtce:EntryList></xtce:SequenceContainer>")
    else:
        containers.append(f'<xtce:SequenceContainer name="{ROOT}" abstract="true">'
                          "<xtce:EntryList>" + "".join(base)
                          + "</xtce:EntryList></xtce:SequenceContainer>")
        for value in range(c.first, c.first + c.modulus):
            m = (value - c.first) % c.minor_frames
            present = [f for f in rest if f.frames is None or m in f.frames]
            entries = layout(present, head_end, total)
            containers.append(
                f'<xtce:SequenceContainer name="{ROOT}_{value}">'
                f"<xtce:EntryList>{''.join(entries)}</xtce:EntryList>"
                f'<xtce:BaseContainer containerRef="{ROOT}"><xtce:RestrictionCriteria>'
                f'<xtce:Comparison parameterRef="FRAME_ID" value="{value}" '
                'useCalibratedValue="false"/></xtce:RestrictionCriteria></xtce:BaseContainer>'
                "</xtce:SequenceContainer>")
    for size in sorted(spares):
        types.append(f'<xtce:IntegerParameterType name="SPARE{size}_Type" signed="false">'
                     f'<xtce:IntegerDataEncoding sizeInBits="{size}" encoding="unsigned"/>'
                     "</xtce:IntegerParameterType>")
    # de-duplicate spare parameters (the same gap recurs in many minor frames)
    params = list(dict.fromkeys(params))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<xtce:SpaceSystem xmlns:xtce="{NS}" name="{spec.vehicle.upper()}">\n'
        "<xtce:TelemetryMetaData>\n"
        "<xtce:ParameterTypeSet>\n" + "\n".join(types) + "\n</xtce:ParameterTypeSet>\n"
        "<xtce:ParameterSet>\n" + "\n".join(params) + "\n</xtce:ParameterSet>\n"
        "<xtce:ContainerSet>\n" + "\n".join(containers) + "\n</xtce:ContainerSet>\n"
        "</xtce:TelemetryMetaData>\n</xtce:SpaceSystem>\n"
    )


def read_alarms(path: Path) -> dict[str, dict[str, Any]]:
    """DefaultAlarm of each parameter type in an XTCE document, keyed by parameter name."""
    from lxml import etree

    ns = {"xtce": NS}
    tree = etree.parse(str(path))
    type_of = {p.get("name"): p.get("parameterTypeRef")
               for p in tree.iterfind(".//xtce:ParameterSet/xtce:Parameter", ns)}
    alarms: dict[str, dict[str, Any]] = {}
    for t in tree.iterfind(".//xtce:ParameterTypeSet/*", ns):
        a: dict[str, Any] = {}
        for tag, key in (("WarningRange", "warning"), ("CriticalRange", "critical")):
            r = t.find(f"xtce:DefaultAlarm/xtce:StaticAlarmRanges/xtce:{tag}", ns)
            if r is not None:
                lo, hi = r.get("minInclusive"), r.get("maxInclusive")
                a[key] = (None if lo is None else float(lo), None if hi is None else float(hi))
        for e in t.iterfind("xtce:DefaultAlarm/xtce:EnumerationAlarmList/"
                            "xtce:EnumerationAlarm", ns):
            a.setdefault(e.get("alarmLevel") + "_labels", []).append(e.get("enumerationLabel"))
        if a:
            alarms[t.get("name")] = a
    return {p: alarms[t] for p, t in type_of.items() if t in alarms}


def alarm_severity(values: NDArray[Any], alarm: dict[str, Any] | None) -> NDArray[np.int8]:
    """XTCE alarm level of each value: outside WarningRange yellow, outside CriticalRange red
    (the ranges are inclusive, so a value on a limit is in range)."""
    out = np.zeros(np.shape(values), dtype=np.int8)
    if not alarm:
        return out
    if "warning_labels" in alarm:
        out[np.isin(values, alarm["warning_labels"])] = YELLOW
    if "critical_labels" in alarm:
        out[np.isin(values, alarm["critical_labels"])] = RED
    for key, level in (("warning", YELLOW), ("critical", RED)):
        if key in alarm:
            lo, hi = alarm[key]
            if lo is not None:
                out[values < lo] = level
            if hi is not None:
                out[values > hi] = level
    return out


class XtcePeer:
    name = "space_packet_parser (XTCE)"
    package = "space_packet_parser"
    language = "XTCE XML (Poly/SplineCalibrator, Enumerated, DefaultAlarm, containers)"
    per_frame = True
    handles = ("all parameters; subcommutated ones only in their minor frames "
               "(a container per frame ID); alarms checked with numpy per batch")

    def build(self, spec: FrameSpec, workdir: Path) -> None:
        import space_packet_parser as spp

        path = Path(workdir) / "apollo_xtce.xml"
        path.write_text(xtce_document(spec))
        self.definition_file = path
        self.defn = spp.load_xtce(path)
        self.defn.root_container_name = ROOT
        self.alarms = read_alarms(path)
        self.fields = spec.fields
        self.spec = spec

    def _parse(self, frames: NDArray[np.uint8]) -> list[Any]:
        parse = self.defn.parse_bytes
        return [parse(row.tobytes(), root_container_name=ROOT) for row in frames]

    def _check(self, packets: list[Any]) -> tuple[int, dict[str, tuple[list[int], Any, Any]]]:
        n = 0
        out: dict[str, tuple[list[int], Any, Any]] = {}
        for f in self.fields:
            rows = [i for i, p in enumerate(packets) if f.id in p]
            vals = np.array([packets[i][f.id] for i in rows],
                            dtype=object if f.type == "discrete" else np.float64)
            n += len(rows)
            out[f.id] = (rows, vals, alarm_severity(vals, self.alarms.get(f.id)))
        return n, out

    def run(self, frames: NDArray[np.uint8]) -> int:
        n, _ = self._check(self._parse(frames))
        return n

    def collect(self, frames: NDArray[np.uint8]) -> PeerResult:
        n, per = self._check(self._parse(frames))
        res = PeerResult(n_values=n)
        minor = minor_of(frames, self.spec)
        for f in self.fields:
            rows, vals, sev = per[f.id]
            expect = rows_for(f, minor)
            assert list(expect) == rows or f.frames is None, f.id
            res.values[f.id] = (np.asarray(rows, dtype=np.int64), vals, sev)
        return res
