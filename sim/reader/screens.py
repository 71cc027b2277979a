"""Stable screen ids and buttons of the reference reader (documented in hardware.md).

Ids never change once published: scenarios and vendor adapters map onto them.
"""

from __future__ import annotations

from enum import Enum


class Screen(str, Enum):
    IDLE = "idle"  # "Place your card on the reader."
    READING = "reading"  # reading the card and asking the eligibility service about it
    PLACE_AGAIN = "place_again"  # card outside the operating volume or unreadable: place it again
    METHOD_SELECT = "method_select"  # face / pin / end (no pin for a face-auth card)
    FACE_AUTH = "face_auth"  # "Put your face in the frame."
    PIN_ENTRY = "pin_entry"  # 4-digit PIN
    PIN_LOCKED = "pin_locked"  # PIN locked after 3 wrong entries: contact your municipality
    STAFF_CALL = "staff_call"  # please call reception staff (visual check needed)
    VISUAL_CHECK = "visual_check"  # staff compare the person with the card photo: confirm / reject
    REGISTRATION = "registration"  # register the card for health-insurance use? register / skip
    CONSENT_SURGERY = "consent_surgery"  # past surgery information: consent / decline
    CONSENT_CARE = "consent_care"  # other past medical care and drug information: consent / decline
    CONSENT_CHECKUP = "consent_checkup"  # health checkups (40+): consent / decline_or_under40
    QUERYING = "querying"  # eligibility query in progress
    DONE = "done"  # finished: please take your card
    ERROR = "error"  # something went wrong (see the message / error event): take your card


MESSAGES: dict[Screen, str] = {
    Screen.IDLE: "Place your card on the reader.",
    Screen.READING: "Reading the card. Do not move it.",
    Screen.PLACE_AGAIN: "The card could not be read. Place the card again.",
    Screen.METHOD_SELECT: "Choose how to confirm your identity.",
    Screen.FACE_AUTH: "Put your face in the frame.",
    Screen.PIN_ENTRY: "Enter your 4-digit PIN.",
    Screen.PIN_LOCKED: "The PIN is locked. Please contact your municipality.",
    Screen.STAFF_CALL: "Please call the reception staff.",
    Screen.VISUAL_CHECK: "Staff: compare the person with the card photo.",
    Screen.REGISTRATION: "Register this card for health-insurance use?",
    Screen.CONSENT_SURGERY: "Share your past surgery information?",
    Screen.CONSENT_CARE: "Share your other past medical care and drug information?",
    Screen.CONSENT_CHECKUP: "Share your health-checkup information (age 40 and over)?",
    Screen.QUERYING: "Checking your eligibility.",
    Screen.DONE: "Done. Please take your card.",
    Screen.ERROR: "An error occurred. Please take your card and ask the reception staff.",
}

# Buttons each screen offers (method_select drops "pin" for a face-auth card).
BUTTONS: dict[Screen, tuple[str, ...]] = {
    Screen.METHOD_SELECT: ("face", "pin", "end"),
    Screen.FACE_AUTH: ("end",),
    Screen.PIN_ENTRY: ("end",),
    Screen.STAFF_CALL: ("end",),
    Screen.REGISTRATION: ("register", "skip"),
    Screen.CONSENT_SURGERY: ("consent", "decline"),
    Screen.CONSENT_CARE: ("consent", "decline"),
    Screen.CONSENT_CHECKUP: ("consent", "decline_or_under40"),
}

# Screens on which a card is in a session (removal here is an error, not the normal end).
SESSION_SCREENS = frozenset({
    Screen.READING, Screen.METHOD_SELECT, Screen.FACE_AUTH, Screen.PIN_ENTRY, Screen.STAFF_CALL,
    Screen.VISUAL_CHECK, Screen.REGISTRATION, Screen.CONSENT_SURGERY, Screen.CONSENT_CARE,
    Screen.CONSENT_CHECKUP, Screen.QUERYING,
})
# Screens that wait for the card to be taken (and raise an alarm if it is left).
TAKE_CARD_SCREENS = frozenset({Screen.DONE, Screen.ERROR, Screen.PIN_LOCKED})
# Screens the patient's inactivity times out.
PATIENT_SCREENS = frozenset({Screen.METHOD_SELECT, Screen.PIN_ENTRY, Screen.REGISTRATION, Screen.CONSENT_SURGERY,
                             Screen.CONSENT_CARE, Screen.CONSENT_CHECKUP})
