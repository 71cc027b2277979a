"""Stable screen ids, buttons and wording of the reference reader (documented in hardware.md).

Ids never change once published: scenarios and vendor adapters map onto them. What a screen
says is a :class:`Text`: the Japanese the patient reads (the notice's wording verbatim where
the notice pictures the screen: N10, N11, N15, N16, N17) and an English gloss for logs and
reports. On the control port ``msg`` carries the Japanese and ``msg_en`` the English.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Text:
    ja: str
    en: str

    def __add__(self, other: "Text") -> "Text":
        return Text(f"{self.ja}\n{other.ja}", f"{self.en} {other.en}")


class Screen(str, Enum):
    IDLE = "idle"  # "Place your card on the reader."
    READING = "reading"  # reading the card and asking the eligibility service about it
    PLACE_AGAIN = "place_again"  # card outside the operating volume or unreadable: place it again
    METHOD_SELECT = "method_select"  # face / pin / end (pin hidden or refused for a face-auth card)
    FACE_AUTH = "face_auth"  # "Put your face in the frame."
    PIN_ENTRY = "pin_entry"  # 4-digit PIN
    PIN_LOCKED = "pin_locked"  # PIN locked after 3 wrong entries: contact your municipality
    STAFF_CALL = "staff_call"  # please call reception staff (visual check needed)
    VISUAL_CHECK = "visual_check"  # staff compare the person with the card photo: confirm / reject
    REGISTRATION = "registration"  # register the card for health-insurance use? register / skip
    REGISTERING = "registering"  # registration sent, waiting for the service (N17: it may take a while)
    CONSENT_SURGERY = "consent_surgery"  # past surgery information: consent / decline
    CONSENT_CARE = "consent_care"  # other past medical care and drug information: consent / decline
    CONSENT_CHECKUP = "consent_checkup"  # health checkups (40+): consent / decline_or_under40
    QUERYING = "querying"  # eligibility query in progress
    DONE = "done"  # finished: please take your card
    ERROR = "error"  # something went wrong (see the message / error event): take your card


# N16, verbatim (the notice has no full stop here).
TAKE_CARD = Text("忘れずに、顔認証付きカードリーダーからマイナンバーカードを取り出してください",
                 "Do not forget to take your My Number Card from the reader.")
_PURPOSE = Text("この情報はあなたの診察や健康管理のために使用します。",
                "This information is used for your care and health management.")

MESSAGES: dict[Screen, Text] = {
    Screen.IDLE: Text("マイナンバーカードを置いてください。", "Place your card on the reader."),
    Screen.READING: Text("カードを読み取っています。カードを動かさないでください。", "Reading the card. Do not move it."),
    Screen.PLACE_AGAIN: Text("カードを読み取れませんでした。もう一度カードを置いてください。",
                             "The card could not be read. Place the card again."),
    Screen.METHOD_SELECT: Text("本人確認の方法を選んでください。\n本人確認の情報は、他の目的には使用しません。",
                               "Choose how to confirm your identity. The identity information is used for "
                               "nothing else."),
    Screen.FACE_AUTH: Text("顔を枠内に入れてください。", "Put your face in the frame."),
    Screen.PIN_ENTRY: Text("暗証番号を入力してください。", "Enter your 4-digit PIN."),
    Screen.PIN_LOCKED: Text("暗証番号がロックされました。お住まいの市区町村の窓口にお問い合わせください。",
                            "The PIN is locked. Please contact your municipality."),
    Screen.STAFF_CALL: Text("受付職員にお声がけください。", "Please call the reception staff."),
    Screen.VISUAL_CHECK: Text("職員の方：カードに記録されている顔写真と一致する本人であることを目視で確認してください。",
                              "Staff: compare the person with the face photo recorded on the card."),
    Screen.REGISTRATION: Text("マイナンバーカードを保険証として登録しますか？",
                              "Register this card for health-insurance use?"),
    Screen.REGISTERING: Text("保険証として登録しています。しばらくお待ちください。\n"
                             "※申込完了までに少々お時間をいただく場合がございます。",
                             "Registering the card for health-insurance use. Please wait: completing the "
                             "application may take a little time."),
    Screen.CONSENT_SURGERY: Text("過去の手術情報を当機関に提供することに同意しますか。",
                                 "Share your past surgery information with this institution?") + _PURPOSE,
    Screen.CONSENT_CARE: Text("過去の手術以外の診療・お薬情報を当機関に提供することに同意しますか。",
                              "Share your other past medical care and drug information with this institution?")
    + _PURPOSE,
    Screen.CONSENT_CHECKUP: Text("（40歳以上対象）過去の健診情報を当機関に提供することに同意しますか。",
                                 "(Age 40 and over) Share your past health-checkup information with this "
                                 "institution?") + _PURPOSE,
    Screen.QUERYING: Text("資格を確認しています。", "Checking your eligibility."),
    Screen.DONE: Text("受付が完了しました。", "Done."),
    Screen.ERROR: Text("エラーが発生しました。受付職員にお声がけください。",
                       "An error occurred. Please ask the reception staff."),
}

# Messages that are not a screen's own.
REGISTERED = Text("マイナンバーカードが保険証として利用可能に!!", "The card can now be used as a health-insurance card.")
USE_FACE_AUTH = Text("このカードは顔認証マイナンバーカードです。暗証番号は使えません。「顔認証を行う」を選んでください。",
                     "This is a face-authentication card: it has no PIN. Choose face authentication.")
ONLY_HOLDER = Text("カードの持ち主の方だけが枠内に入るようにしてください。", "Only the card holder in the frame, please.")
NOT_RECOGNISED = Text("顔を認識できませんでした。もう一度カメラを見てください。", "Face not recognised. Look at the camera again.")

# Buttons each screen offers, in display order.
BUTTONS: dict[Screen, tuple[str, ...]] = {
    Screen.METHOD_SELECT: ("face", "pin", "end"),
    Screen.FACE_AUTH: ("end",),
    Screen.PIN_ENTRY: ("end",),
    Screen.STAFF_CALL: ("end",),
    Screen.REGISTRATION: ("skip", "register"),
    Screen.CONSENT_SURGERY: ("consent", "decline"),
    Screen.CONSENT_CARE: ("consent", "decline"),
    Screen.CONSENT_CHECKUP: ("consent", "decline_or_under40"),
}

# What each button says (N10, N11, N15, N17 verbatim); the PIN screen's "end" is its キャンセル key.
LABELS: dict[str, str] = {
    "face": "顔認証を行う", "pin": "暗証番号を入力", "end": "終了する", "register": "登録する",
    "skip": "登録せずに終了", "consent": "同意する", "decline": "同意しない", "decline_or_under40": "同意しない・40歳未満の方",
}
LABELS_BY_SCREEN: dict[Screen, dict[str, str]] = {Screen.PIN_ENTRY: {"end": "キャンセル"}}


def label(screen: Screen, button: str) -> str:
    return LABELS_BY_SCREEN.get(screen, {}).get(button, LABELS.get(button, button))


# Screens on which a card is in a session (removal here is an error, not the normal end).
SESSION_SCREENS = frozenset({
    Screen.READING, Screen.METHOD_SELECT, Screen.FACE_AUTH, Screen.PIN_ENTRY, Screen.STAFF_CALL,
    Screen.VISUAL_CHECK, Screen.REGISTRATION, Screen.REGISTERING, Screen.CONSENT_SURGERY, Screen.CONSENT_CARE,
    Screen.CONSENT_CHECKUP, Screen.QUERYING,
})
# Screens that end a visit: each reminds the patient to take the card (N16), then waits for it
# and raises an alarm if it is left.
TAKE_CARD_SCREENS = frozenset({Screen.DONE, Screen.ERROR, Screen.PIN_LOCKED})
# Screens the patient's inactivity times out.
PATIENT_SCREENS = frozenset({Screen.METHOD_SELECT, Screen.PIN_ENTRY, Screen.REGISTRATION, Screen.CONSENT_SURGERY,
                             Screen.CONSENT_CARE, Screen.CONSENT_CHECKUP})
