"""A pjsua2 phone in a process of its own, driven line by line over
stdin/stdout (one JSON object per line each way), so that pjsip's threads
and event loop never share a process with pytest.

The library runs with no worker thread: this loop polls pjsip's events
and stdin in turn, so every callback runs here, one at a time.

Commands (`op` and its arguments; every answer has `ok`, and `error` when
not ok):
  account  name user domain register publish [expires] [mwi]
           an account on the one transport; with register, waits for the
           registrar's final answer (answer: `code`); with mwi, it
           subscribes to its own message-summary (AccountMwiConfig)
  mwi_info name [expect] [wait]
           the last message summary the account's onMwiInfo got (answer:
           `body`, `state`, `count`); with expect, waits until the body
           contains it
  status   name basic [note] [activity]  publish (open/closed, RPID away/busy)
  buddy    name uri                 subscribe to uri's presence
  buddy_info name uri [expect] [wait]
           what the phone shows of the buddy (answer: `info`); with expect
           (a dict of info fields), waits until they match or `wait` seconds passed
  unsubscribe name uri
  unregister name                   waits for the final answer
  quit                              destroys the library (un-PUBLISH,
                                    un-REGISTER, un-SUBSCRIBE), then exits
Started as: pjsua_driver.py udp|tcp PROXY_PORT LOGFILE
"""

import json
import os
import select
import sys
import time

import pjsua2 as pj

STATUS_NAMES = {pj.PJSUA_BUDDY_STATUS_UNKNOWN: "unknown", pj.PJSUA_BUDDY_STATUS_ONLINE: "online",
                pj.PJSUA_BUDDY_STATUS_OFFLINE: "offline"}
ACTIVITY_NAMES = {pj.PJRPID_ACTIVITY_UNKNOWN: "unknown", pj.PJRPID_ACTIVITY_AWAY: "away",
                  pj.PJRPID_ACTIVITY_BUSY: "busy"}
ACTIVITIES = {v: k for k, v in ACTIVITY_NAMES.items()}
EVSUB_STATES = {getattr(pj, n): n[len("PJSIP_EVSUB_STATE_"):].lower()
                for n in dir(pj) if n.startswith("PJSIP_EVSUB_STATE_")}


class Phone(pj.Account):
    def __init__(self):
        super().__init__()
        self.reg_code = None
        self.buddies = {}
        self.mwi = {"body": "", "state": "", "count": 0}

    def onMwiInfo(self, prm):
        # The summary NOTIFY as pjsip received it: its body is what the
        # phone's voicemail lamp reads.
        whole = prm.rdata.wholeMsg
        body = whole.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in whole else ""
        self.mwi = {"body": body, "state": EVSUB_STATES.get(prm.state, str(prm.state)),
                    "count": self.mwi["count"] + 1}

    def onRegState(self, prm):
        if prm.code >= 200:
            self.reg_code = prm.code


class Watched(pj.Buddy):
    pass


class Driver:
    def __init__(self, transport, proxy_port, logfile):
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = False
        cfg.logConfig.level = 5
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.filename = logfile
        cfg.medConfig.noVad = True
        self.ep.libInit(cfg)
        kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = "127.0.0.1"
        tcfg.publicAddress = "127.0.0.1"
        self.transport_id = self.ep.transportCreate(kind, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        self.proxy = f"sip:127.0.0.1:{proxy_port};transport={transport};lr"
        self.registrar = f"sip:127.0.0.1:{proxy_port};transport={transport}"
        self.accounts = {}

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            self.ep.libHandleEvents(10)
            if time.monotonic() >= deadline:
                return

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.ep.libHandleEvents(20)
        return True

    # -- commands ---------------------------------------------------------

    def op_account(self, name, user, domain, register, publish, expires=300, mwi=False):
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{user}@{domain}"
        acfg.sipConfig.proxies.append(self.proxy)
        acfg.sipConfig.transportId = self.transport_id
        acfg.regConfig.registerOnAdd = bool(register)
        acfg.regConfig.timeoutSec = expires
        if register:
            acfg.regConfig.registrarUri = self.registrar
        acfg.presConfig.publishEnabled = bool(publish)
        acfg.mwiConfig.enabled = bool(mwi)
        acfg.mwiConfig.expirationSec = expires
        acc = Phone()
        acc.create(acfg)
        self.accounts[name] = acc
        if register:
            self.wait(lambda: acc.reg_code is not None, 15)
            return {"code": acc.reg_code}
        return {}

    def op_status(self, name, basic, note="", activity="unknown"):
        ps = pj.PresenceStatus()
        ps.status = pj.PJSUA_BUDDY_STATUS_ONLINE if basic == "open" else \
            pj.PJSUA_BUDDY_STATUS_OFFLINE
        ps.note = note
        ps.activity = ACTIVITIES[activity]
        self.accounts[name].setOnlineStatus(ps)
        self.poll(0.1)
        return {}

    def op_buddy(self, name, uri):
        bcfg = pj.BuddyConfig()
        bcfg.uri = uri
        bcfg.subscribe = True
        buddy = Watched()
        buddy.create(self.accounts[name], bcfg)
        self.accounts[name].buddies[uri] = buddy
        return {}

    def info(self, name, uri):
        i = self.accounts[name].buddies[uri].getInfo()
        s = i.presStatus
        return {"status": STATUS_NAMES.get(s.status, str(s.status)), "statusText": s.statusText,
                "note": s.note, "activity": ACTIVITY_NAMES.get(s.activity, str(s.activity)),
                "subState": i.subStateName, "subTermCode": i.subTermCode}

    def op_buddy_info(self, name, uri, expect=None, wait=10):
        if expect:
            self.wait(lambda: all(self.info(name, uri).get(k) == v for k, v in expect.items()),
                      wait)
        else:
            self.poll(0.05)
        return {"info": self.info(name, uri)}

    def op_mwi_info(self, name, expect=None, wait=10):
        acc = self.accounts[name]
        if expect:
            self.wait(lambda: expect in acc.mwi["body"], wait)
        else:
            self.poll(0.05)
        return dict(acc.mwi)

    def op_unsubscribe(self, name, uri):
        self.accounts[name].buddies[uri].subscribePresence(False)
        self.poll(0.1)
        return {}

    def op_unregister(self, name):
        acc = self.accounts[name]
        acc.reg_code = None
        acc.setRegistration(False)
        self.wait(lambda: acc.reg_code is not None, 15)
        return {"code": acc.reg_code}

    def op_quit(self):
        for acc in self.accounts.values():
            for buddy in acc.buddies.values():
                buddy.subscribePresence(False)
        self.poll(0.3)
        self.accounts.clear()
        self.ep.libDestroy()
        return {}


def main():
    transport, proxy_port, logfile = sys.argv[1:4]
    driver = Driver(transport, int(proxy_port), logfile)
    out = sys.stdout
    out.write(json.dumps({"ok": True, "ready": True}) + "\n")
    out.flush()
    stdin = sys.stdin.fileno()
    pending = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], 0)
        if not ready:
            driver.ep.libHandleEvents(20)
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command = json.loads(line)
            op = command.pop("op")
            try:
                answer = {"ok": True, **getattr(driver, "op_" + op)(**command)}
            except Exception as e:  # reported to the test, which fails with it
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
            if op == "quit":
                return


if __name__ == "__main__":
    main()
