"""A bot built on Pipecat's own telephony code, unchanged, as the AI of a
`stream` call in the Telnyx, Plivo, Exotel or Vonage dialect: Pipecat's
transport detection must recognise our `start` as that CPaaS's (Pipecat
has no detection for Vonage, whose bots build its serializer when
`websocket:connected` arrives, as here), its serializer must turn our
frames into audio and DTMF frames, and what it serialises (audio, then an
interruption for barge-in) must reach the caller.

usage: pipecat_cpaas_bot.py PORT RESULT_JSON
Serves one call on ws://127.0.0.1:PORT/, then writes what it saw.
"""

import asyncio
import json
import math
import struct
import sys
from types import SimpleNamespace

import websockets
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.runner.utils import _detect_transport_type_from_message
from pipecat.serializers.exotel import ExotelFrameSerializer
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.vonage import VonageFrameSerializer

PIPELINE_RATE = 16000


def tone(hz, seconds, rate):
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(n)
    )


def serializer_for(kind, data, result):
    """The serializer Pipecat's runner would build for this start message."""
    if kind == "vonage":
        result["stream_id"] = data["stream_sid"]
        result["call_id"] = data["call_sid"]
        result["from"], result["to"] = data.get("from"), data.get("to")
        return VonageFrameSerializer()
    start = data["start"]
    if kind == "telnyx":
        result["stream_id"] = data["stream_id"]
        result["call_id"] = start["call_control_id"]
        result["from"], result["to"] = start.get("from"), start.get("to")
        encoding = start["media_format"]["encoding"]
        return TelnyxFrameSerializer(
            stream_id=data["stream_id"],
            outbound_encoding=encoding,
            inbound_encoding=encoding,
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False),
        )
    if kind == "plivo":
        result["stream_id"] = start["streamId"]
        result["call_id"] = start["callId"]
        return PlivoFrameSerializer(
            stream_id=start["streamId"],
            params=PlivoFrameSerializer.InputParams(auto_hang_up=False),
        )
    if kind == "exotel":
        result["stream_id"] = start["stream_sid"]
        result["call_id"] = start["call_sid"]
        result["from"], result["to"] = start.get("from"), start.get("to")
        return ExotelFrameSerializer(stream_sid=start["stream_sid"], call_sid=start["call_sid"])
    raise SystemExit(f"no serializer for {kind}")


async def serve(ws, result, done):
    serializer = None
    audio_bytes = 0
    spoke_at = None
    interrupted = False
    async for message in ws:
        data = {} if isinstance(message, bytes) else json.loads(message)
        if serializer is None:
            if data.get("event") == "websocket:connected":
                kind = "vonage"
            else:
                kind = _detect_transport_type_from_message(data)
            if kind == "unknown":
                result.setdefault("before_start", []).append(data.get("event"))
                continue
            result["transport"] = kind
            serializer = serializer_for(kind, data, result)
            await serializer.setup(SimpleNamespace(audio_in_sample_rate=PIPELINE_RATE))
            continue
        frame = await serializer.deserialize(message)
        if isinstance(frame, InputAudioRawFrame):
            audio_bytes += len(frame.audio)
            result["audio_rate"] = frame.sample_rate
            if audio_bytes >= PIPELINE_RATE and spoke_at is None:
                # One second of the caller heard: push two seconds of
                # 1 kHz at once, in 20 ms frames, as a TTS service would.
                spoke_at = audio_bytes
                pcm = tone(1000, 2.0, PIPELINE_RATE)
                step = PIPELINE_RATE // 50 * 2
                for i in range(0, len(pcm), step):
                    out = OutputAudioRawFrame(
                        audio=pcm[i : i + step], sample_rate=PIPELINE_RATE, num_channels=1
                    )
                    payload = await serializer.serialize(out)
                    if payload:
                        await ws.send(payload)
            elif spoke_at is not None and not interrupted and audio_bytes >= spoke_at + PIPELINE_RATE:
                # The caller talks over the bot for half a second (16 kHz,
                # 2 bytes a sample): barge in, as Pipecat does on speech.
                interrupted = True
                payload = await serializer.serialize(InterruptionFrame())
                sent = json.loads(payload)
                result["interrupt"] = sent.get("event") or sent.get("action")
                await ws.send(payload)
        elif isinstance(frame, InputDTMFFrame):
            result.setdefault("digits", []).append(frame.button.value)
        elif data.get("event") in ("stop", "websocket:stop"):
            result["stopped"] = True
            break
    result["audio_seconds"] = audio_bytes / 2 / PIPELINE_RATE
    done.set()


async def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    result = {}
    done = asyncio.Event()
    async with websockets.serve(lambda ws: serve(ws, result, done), "127.0.0.1", port):
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), timeout=30)
    with open(out, "w") as f:
        json.dump(result, f)


asyncio.run(main())
