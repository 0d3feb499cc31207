"""Twilio's own Python helper library (PyPI twilio, unchanged) against the
gateway's Twilio-compatible API: only the API domain's base URL points at
the gateway. One step per run; prints what it got as one JSON line.

usage: twilio_calls.py '<json: base, account, token, step, ...>'
"""
import json
import sys

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

a = json.loads(sys.argv[1])
client = Client(a["account"], a["token"])
client.api.base_url = a["base"]

try:
    step = a["step"]
    if step == "create":
        call = client.calls.create(
            to=a["to"],
            from_=a["from"],
            twiml=a["twiml"],
            status_callback=a["status_callback"],
            status_callback_event=["initiated", "answered", "completed"],
            timeout=20,
            record=a.get("record", False),
            recording_status_callback=a.get("recording_status_callback"),
        )
        out = {"sid": call.sid, "status": call.status, "direction": call.direction}
    elif step == "fetch":
        call = client.calls(a["sid"]).fetch()
        out = {"sid": call.sid, "status": call.status, "direction": call.direction,
               "from": call._from, "to": call.to, "start_time": str(call.start_time)}
    elif step == "list":
        out = {"sids": [c.sid for c in client.calls.list(to=a["to"], page_size=1, limit=5)]}
    elif step == "end":
        call = client.calls(a["sid"]).update(status="completed")
        out = {"sid": call.sid}
    elif step == "message":
        m = client.messages.create(to=a["to"], from_=a["from"], body=a["body"])
        out = {"sid": m.sid, "status": m.status, "direction": m.direction}
    elif step == "message_fetch":
        m = client.messages(a["sid"]).fetch()
        out = {"sid": m.sid, "status": m.status, "body": m.body, "from": m.from_, "to": m.to}
    elif step == "message_list":
        out = {"sids": [m.sid for m in client.messages.list(to=a["to"], page_size=1, limit=5)]}
    elif step == "raw":
        # The library's own HTTP client, for requests its resources do not
        # make (filters and parameters the gateway refuses).
        resp = client.http_client.request(
            a["method"], a["base"] + a["path"], params=a.get("params"),
            data=a.get("data"), auth=(a["account"], a["token"]))
        out = {"status": resp.status_code, "body": json.loads(resp.text)}
    elif step == "unsupported":
        client.calls.create(to=a["to"], from_=a["from"], twiml="<Response/>",
                            machine_detection="Enable")
        out = {"created": True}
    elif step == "auth":
        client.calls(a["sid"]).fetch()
        out = {"fetched": True}
    else:
        raise SystemExit(f"unknown step {step}")
except TwilioRestException as e:
    out = {"error": {"status": e.status, "code": e.code, "message": e.msg}}
print(json.dumps(out))
