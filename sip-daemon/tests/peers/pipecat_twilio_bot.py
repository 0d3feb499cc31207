"""A bot built on Pipecat's own Twilio code, unchanged, as the AI of a
`stream` call: Pipecat's transport detection must recognise our `start`
as Twilio's, its TwilioFrameSerializer must turn our frames into audio and
DTMF frames, and the audio it serialises must reach the caller.

usage: pipecat_twilio_bot.py PORT RESULT_JSON
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
    OutputAudioRawFrame,
)
from pipecat.runner.utils import _detect_transport_type_from_message
from pipecat.serializers.twilio import TwilioFrameSerializer

PIPELINE_RATE = 16000


def tone(hz, seconds, rate):
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(n)
    )


async def serve(ws, result, done):
    serializer = None
    audio_bytes = 0
    spoke = False
    async for message in ws:
        data = json.loads(message)
        if serializer is None:
            kind = _detect_transport_type_from_message(data)
            if kind == "unknown":
                result.setdefault("before_start", []).append(data.get("event"))
                continue
            result["transport"] = kind
            start = data["start"]
            result["stream_sid"] = start["streamSid"]
            result["call_sid"] = start["callSid"]
            result["custom"] = start.get("customParameters", {})
            serializer = TwilioFrameSerializer(
                stream_sid=start["streamSid"],
                call_sid=start["callSid"],
                params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
            )
            await serializer.setup(SimpleNamespace(audio_in_sample_rate=PIPELINE_RATE))
            continue
        frame = await serializer.deserialize(message)
        if isinstance(frame, InputAudioRawFrame):
            audio_bytes += len(frame.audio)
            result["audio_rate"] = frame.sample_rate
            if audio_bytes >= PIPELINE_RATE and not spoke:
                # One second of the caller heard: answer with a second of
                # 1 kHz, in 20 ms frames as a TTS service would push them.
                spoke = True
                pcm = tone(1000, 1.0, PIPELINE_RATE)
                step = PIPELINE_RATE // 50 * 2
                for i in range(0, len(pcm), step):
                    out = OutputAudioRawFrame(
                        audio=pcm[i : i + step], sample_rate=PIPELINE_RATE, num_channels=1
                    )
                    payload = await serializer.serialize(out)
                    # As Pipecat's websocket transport does: the streaming
                    # resampler may hold back a first short chunk.
                    if payload:
                        await ws.send(payload)
        elif isinstance(frame, InputDTMFFrame):
            result.setdefault("digits", []).append(frame.button.value)
        elif data.get("event") == "stop":
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
