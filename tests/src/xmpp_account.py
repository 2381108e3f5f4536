"""XEP-0077 account actions for qam's XMPP tests, with Debian's python3-slixmpp.

usage: xmpp_account.py register|passwd|unregister PORT JID PASSWORD [NEW_PASSWORD]
Connects to 127.0.0.1:PORT without TLS, prints OK or ERROR <condition>; exit 0 only on OK.
"""
import asyncio
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

mode, port, jid, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
new_password = sys.argv[5] if len(sys.argv) > 5 else None
result = {"outcome": "ERROR no-session"}


def condition(error):
    return "ERROR " + (error.iq["error"]["condition"] or "unknown")


class Account(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(jid, password)
        if mode == "register":
            self.add_event_handler("register", self.register)
        self.add_event_handler("session_start", self.session_start)
        self.add_event_handler("failed_all_auth", self.failed)

    async def register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=15)
            result["outcome"] = "OK"
        except IqError as error:
            result["outcome"] = condition(error)
            self.give_up_login()
        except IqTimeout:
            result["outcome"] = "ERROR timeout"
            self.give_up_login()

    def give_up_login(self):
        # Without this, slixmpp goes on to SASL after the registration failed and sends the
        # password after its own </stream:stream>: Prosody then logs it as junk (debug level).
        self.unregister_feature("mechanisms", self["feature_mechanisms"].order)
        self.disconnect()

    def failed(self, _event):
        if mode != "register":
            result["outcome"] = "ERROR not-authorized"
        self.disconnect()

    async def session_start(self, _event):
        try:
            if mode == "passwd":
                await self["xep_0077"].change_password(new_password, timeout=15)
                result["outcome"] = "OK"
            elif mode == "unregister":
                await self["xep_0077"].cancel_registration(timeout=15)
                result["outcome"] = "OK"
        except IqError as error:
            result["outcome"] = condition(error)
        except IqTimeout:
            result["outcome"] = "ERROR timeout"
        self.disconnect()


def give_up():
    result["outcome"] = "ERROR timeout"
    xmpp.disconnect()


xmpp = Account()
xmpp.register_plugin("xep_0030")
xmpp.register_plugin("xep_0004")
xmpp.register_plugin("xep_0066")
xmpp.register_plugin("xep_0077")
xmpp["xep_0077"].force_registration = mode == "register"
xmpp["feature_mechanisms"].unencrypted_plain = True
# slixmpp 1.8 queues every stanza until the session starts, so its own in-band registration
# (which happens before login) would never be sent.
xmpp._always_send_everything = True
xmpp.connect(("127.0.0.1", port), use_ssl=False, disable_starttls=True, force_starttls=False)
asyncio.get_event_loop().call_later(30, give_up)
xmpp.process(forever=False)
print(result["outcome"])
sys.exit(0 if result["outcome"] == "OK" else 1)
