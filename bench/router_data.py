"""The labelled routing set bench/router.py generates: two tenants, two adapters each, their
documents, and prompts for all four paths.

Honesty rules the generator follows: instructions are paraphrased many ways; adapter inputs
mention the same products and systems the documents describe (so retrieval finds something
for them too); general prompts borrow the tenants' vocabulary without asking for their facts;
combined prompts ask for an adapter's format AND a document fact, in words other than the
documents'; no prompt names its label ("adapter", "documents", "rag", ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class TenantSpec:
    """A tenant: its adapters (name -> exemplar prompts), documents and labelled prompts."""

    name: str
    adapters: dict[str, list[str]]
    documents: list[dict[str, str]]
    prompts: list[dict[str, str]] = field(default_factory=list)  # {"prompt", "route", "adapter"?}


# -- shop: a home-goods store --------------------------------------------------------------------
SHOP_DOCS = [
    (
        "returns",
        "Returns policy",
        "Items can be returned within 30 days of delivery with the receipt. Refunds reach the original payment method within 5 business days. Sale items can be exchanged but not refunded.",
    ),
    (
        "shipping",
        "Shipping options",
        "Standard shipping takes 3 to 5 business days and costs 4.95 euros. Express shipping arrives the next business day for 12.50 euros when ordered before 2 pm. Orders over 60 euros ship free with standard shipping.",
    ),
    (
        "kettle",
        "Kettle SKU-4471",
        "SKU-4471 is the Borealis steel kettle, 1.7 litres, priced at 39 euros. It carries a 2-year warranty.",
    ),
    (
        "mugs",
        "Mug set SKU-2210",
        "SKU-2210 is a set of four ceramic mugs in slate grey, priced at 24 euros per set.",
    ),
    (
        "toaster",
        "Toaster SKU-3302",
        "SKU-3302 is the Cobalt two-slice toaster, priced at 49 euros, with a 2-year warranty on parts.",
    ),
    (
        "lamp",
        "Desk lamp SKU-5150",
        "SKU-5150 is the Juniper oak desk lamp, priced at 65 euros. Bulbs are sold separately.",
    ),
    (
        "hours",
        "Store hours",
        "The Leeds store opens Monday to Saturday from 9 am to 7 pm and on Sunday from 11 am to 4 pm. It is closed on public holidays.",
    ),
    (
        "warranty",
        "Warranty",
        "All electrical appliances carry a 2-year manufacturer warranty. Warranty claims need the order number and a photo of the fault.",
    ),
    (
        "giftcards",
        "Gift cards",
        "Gift cards are valid for 3 years from purchase and cannot be exchanged for cash.",
    ),
    (
        "loyalty",
        "Loyalty points",
        "Members earn one point per euro spent; 100 points give a 5 euro voucher. Points expire after 12 months without a purchase.",
    ),
    (
        "price-match",
        "Price match",
        "We match the price of identical items from other UK retailers within 14 days of purchase.",
    ),
]

SHOP_ORDER_EXEMPLARS = [
    "Turn this customer message into an order record: 'Hi, please send two ceramic mugs and one kettle to 14 Elm Road, Leeds.'",
    "Extract the order details as JSON from: 'I'd like 3 toasters delivered to 9 Mill Lane, York, asap.'",
    "Parse this email into items, quantities and delivery address: 'Can I get one oak lamp and two mug sets? Address: 22 High St, Bath.'",
    "From the note below, produce a JSON order with fields items, quantity and address. Note: 'one steel kettle for flat 3, 5 Kings Rd, Hull'",
    "Structure this chat message as an order: 'hey, two lamps please, shipping to 71 Queen St, Derby'",
    "Convert to an order object: 'Please post four mugs and a toaster to 8 Bridge Way, Leeds'",
    "Pull out what was ordered and where it goes: 'need 2 kettles at 40 Park Ave, Sheffield'",
    "Make an order entry from this: 'One lamp, one kettle. Deliver to 5 Green Close, Leeds.'",
]
SHOP_REPLY_EXEMPLARS = [
    "Rewrite this reply to a customer so it sounds warm and professional: 'your parcel is late, not our fault, wait.'",
    "Make this answer to a complaint friendlier: 'we got your email. the item is broken? send it back.'",
    "Polish this customer reply, keep it short and kind: 'no we can't do that.'",
    "Improve the tone of this message to a customer: 'read the website, it's all there.'",
    "Turn this blunt reply into a polite one: 'wrong item? not possible, check again.'",
    "Reword this so a customer feels looked after: 'refund coming eventually.'",
    "Soften this response for an upset buyer: 'delays happen, nothing to do.'",
    "Rephrase this reply politely and apologise: 'you ordered the wrong colour.'",
]

ITEMS = [
    "two ceramic mugs",
    "a steel kettle",
    "one toaster",
    "three mug sets",
    "an oak desk lamp",
    "two kettles",
    "a lamp and a toaster",
    "four mugs",
    "one kettle and two mug sets",
    "a toaster",
]
ADDRESSES = [
    "12 Station Rd, Leeds",
    "4 Rose Lane, York",
    "flat 2, 18 Mill St, Hull",
    "33 Church Walk, Bath",
    "7 Castle View, Derby",
    "90 Market Sq, Sheffield",
    "15 Oak Drive, Leeds",
    "2 Quay St, Bristol",
]
ORDER_ASKS = [
    "Turn this into an order record: '{m}'",
    "Can you get the order details out of this message? '{m}'",
    "Give me the JSON for this order: '{m}'",
    "Customer wrote: '{m}' Structure it as an order, please.",
    "Parse items, quantities and address from: '{m}'",
    "I need this as a structured order: '{m}'",
    "Log this order in our format: '{m}'",
    "Pull out what they want and where to send it: '{m}'",
]
ORDER_MSGS = [
    "hi, could you send {i} to {a}",
    "I'd like {i}, delivery to {a} please",
    "Please ship {i}. Address: {a}",
    "{i} for {a}, thanks!",
    "we want {i} sent over to {a}",
]
DRAFTS = [
    "it's on the website, read it",
    "not our problem, ask the courier",
    "you can't return that",
    "we sent it already, wait",
    "the kettle works fine, you're using it wrong",
    "no discount, sorry",
    "email us again next week",
    "refunds take time, stop asking",
    "that lamp is sold out, pick another",
    "your order was cancelled, no idea why",
]
REPLY_ASKS = [
    "Rewrite this reply so it's kind and professional: '{d}'",
    "Make this answer sound friendlier: '{d}'",
    "Could you polish my response to a customer? '{d}'",
    "Reword this politely and apologise where it fits: '{d}'",
    "Improve the tone here: '{d}'",
    "This is too blunt, fix it: '{d}'",
]
SHOP_FACT_QUESTIONS = [
    "How long do I have to send something back?",
    "If I bring back an item, when does the money reach my card?",
    "Can I get my money back on something I bought in the sale?",
    "How many days does normal delivery take?",
    "What does next-day delivery cost?",
    "Is there a minimum spend for free delivery?",
    "Until what time can I order to get it tomorrow?",
    "How much is the SKU-4471?",
    "What does SKU-2210 cost?",
    "Is SKU-3302 covered if it breaks after a year?",
    "What's the price of the oak lamp, and does it come with a bulb?",
    "How big is the Borealis kettle?",
    "Are you open on Sundays?",
    "What time does the Leeds shop close on Saturday?",
    "Can I visit the store on a bank holiday?",
    "How long is the guarantee on electrical things?",
    "What do I need to send for a warranty claim?",
    "Do gift vouchers expire?",
    "Can I swap a gift card for cash?",
    "How many points do I need for a voucher?",
    "Do loyalty points run out?",
    "Will you match a cheaper price I found elsewhere?",
    "How long after buying can I ask for a price match?",
    "What colour are the mugs in the four-piece set?",
    "How much is the two-slice toaster?",
    "What's the warranty on the toaster's parts?",
    "How much do four mugs cost?",
    "Which kettle do you sell and what does it cost?",
    "When will my refund show up?",
    "Does the lamp include bulbs?",
]
SHOP_GENERAL = [
    "What's the best way to descale a kettle with vinegar?",
    "How do I make a good cup of tea?",
    "Why do ceramic mugs get hot in the microwave?",
    "Write a short poem about a rainy afternoon.",
    "What is the capital of Portugal?",
    "How do toasters know when the bread is done?",
    "Give me three tips for a cosy reading corner.",
    "What is 18% of 250?",
    "Explain how a thermostat works.",
    "How should I clean an oak table?",
    "What's the history of the teapot?",
    "Suggest a name for a small coffee shop.",
    "How many litres are in a gallon?",
    "Why is steel resistant to rust when it's stainless?",
    "Tell me a fun fact about coffee.",
    "What is a good housewarming gift idea?",
    "How do I write a thank-you note?",
    "Which is healthier, green tea or black tea?",
    "Explain what inflation means in simple terms.",
    "How do I remove a coffee stain from a shirt?",
    "Who invented the light bulb?",
    "What is the difference between LED and halogen lamps?",
    "How long should I boil pasta?",
    "Give me a recipe idea using toast and eggs.",
    "What does 'sustainable packaging' mean?",
    "What are good habits for a tidy kitchen?",
    "How does online shopping affect local high streets?",
    "What's a polite way to complain in a restaurant?",
]
SHOP_COMBINED = [
    "Turn this into an order record and add each item's current price: '{m}'",
    "Make a JSON order from '{m}' and include the delivery cost for express shipping.",
    "Structure this order and note whether it qualifies for free delivery: '{m}'",
    "Parse '{m}' into an order and fill in the unit price of SKU-4471.",
    "Create the order entry for '{m}', with the price of the SKU-2210 set included.",
    "Rewrite this reply warmly and tell the customer exactly how long they have to return it: '{d}'",
    "Polish this response and include when the refund will actually arrive: '{d}'",
    "Make this answer friendlier and mention our Sunday opening hours: '{d}'",
    "Reword this politely and add the real warranty length for appliances: '{d}'",
    "Soften this reply and explain what a warranty claim needs from them: '{d}'",
    "Rewrite kindly and tell them the next-day delivery price and cut-off time: '{d}'",
    "Make this reply warmer and say whether gift cards expire: '{d}'",
    "Improve the tone and quote our price-match window: '{d}'",
]

# -- itdesk: an IT helpdesk ----------------------------------------------------------------------
IT_DOCS = [
    (
        "vpn",
        "VPN access",
        "Staff connect remotely with the GlobalConnect client to vpn.corp.example on port 443. Two-factor authentication with the Authenticator app is required.",
    ),
    (
        "passwords",
        "Password rules",
        "Passwords need at least 14 characters and must change every 180 days. The last 10 passwords cannot be reused.",
    ),
    (
        "laptops",
        "Standard laptops",
        "Engineers get the LT-2231 laptop with 32 GB of memory; everyone else gets the LT-1180 with 16 GB. Replacements are issued every 4 years.",
    ),
    (
        "oncall",
        "On-call rota",
        "The infrastructure on-call engineer is reached on extension 4400 outside office hours. Severity 1 incidents must be acknowledged within 15 minutes.",
    ),
    (
        "software",
        "Software requests",
        "New software is requested with form SR-17 and approved by the team lead within 3 working days.",
    ),
    (
        "backup",
        "Backups",
        "Laptops back up to the cloud every night at 1 am. Deleted files can be restored for 90 days.",
    ),
    (
        "wifi",
        "Guest wifi",
        "Visitors use the network CorpGuest; the password changes every Monday and is printed at reception.",
    ),
    (
        "printing",
        "Printing",
        "Printers on each floor use badge release; colour printing is limited to 200 pages a month per person.",
    ),
    (
        "mfa",
        "Lost phone",
        "If you lose the phone with your authenticator, call the service desk on extension 2000 to reset two-factor authentication.",
    ),
    (
        "hardware",
        "Monitors and docks",
        "Each desk has a 27-inch monitor and a USB-C dock model DK-90; extra monitors need manager approval.",
    ),
]
TRIAGE_EXEMPLARS = [
    "Triage this ticket: 'My laptop won't turn on after the update, I have a client demo in an hour.'",
    "Classify this support request by category and priority: 'The shared drive is very slow today.'",
    "Assign a category and urgency to: 'I can't log in to email, says account locked.'",
    "Label this ticket with type and severity as JSON: 'printer on floor 3 shows paper jam'",
    "What category and priority is this ticket? 'Whole sales team lost internet access.'",
    "Sort this request into a queue with a priority: 'need a new mouse, the old one double clicks'",
    "Triage: 'Outlook crashes every time I open the calendar.'",
    "Give category and severity for: 'production database is not responding'",
]
NOTES_EXEMPLARS = [
    "Turn these meeting notes into action items with owners: 'Ana will draft the budget, Tom checks vendor quotes by Friday.'",
    "Summarise this meeting into a list of tasks: 'we agreed to move the launch; Priya updates the plan; Leo emails the client.'",
    "Extract action items from these notes: 'Sam to fix the login bug, Mia reviews the design next week.'",
    "Make a to-do list with names from: 'Discussed hiring. Raj posts the job ad. Kim books interviews.'",
    "List who does what after this meeting: 'Jo prepares slides, Ben collects feedback, due Monday.'",
    "Write the action points from: 'Team will test the new build; Eva owns the test plan.'",
    "From these minutes, pull out tasks and owners: 'Dan orders laptops, Lily sets up accounts.'",
    "Bullet the follow-ups from this call: 'Nina sends the contract, Omar schedules a demo.'",
]
PROBLEMS = [
    "my screen flickers since this morning",
    "I can't connect from the hotel",
    "my password expired and I'm locked out",
    "the printer keeps asking for my badge twice",
    "I deleted a folder by mistake yesterday",
    "Teams drops every call",
    "I need a second monitor",
    "my laptop is really slow and old",
    "I lost my phone with the authenticator on it",
    "a visitor needs internet access",
    "I need Photoshop installed",
    "our server room alarm is beeping",
]
TRIAGE_ASKS = [
    "Triage this ticket: '{p}'",
    "What category and priority would you give this? '{p}'",
    "Classify the request: '{p}'",
    "Sort this into a queue with an urgency level: '{p}'",
    "Label this ticket as JSON with type and severity: '{p}'",
    "Someone reported: '{p}'. Give it a category and priority.",
]
NOTES = [
    "Ana sends the report, Tom fixes the build by Thursday",
    "we chose a vendor; Raj signs the contract; Eva informs finance",
    "Leo updates the wiki and Mia trains the new hire",
    "Kim orders chairs, Ben books the offsite for May",
    "Omar migrates the database, Nina tests it on staging",
    "Sam rotates the certificates, Jo documents the steps",
    "Priya reviews access rights, Dan removes old accounts",
    "Lily drafts the newsletter, Jo approves it",
]
NOTES_ASKS = [
    "Turn these notes into action items with owners: '{n}'",
    "Who does what? Make a task list from: '{n}'",
    "Summarise the meeting as follow-ups: '{n}'",
    "Give me bullet-point actions from: '{n}'",
    "Write up the to-dos from this call: '{n}'",
]
IT_FACT_QUESTIONS = [
    "Which program do I use to work from home?",
    "What's the address and port of the remote access server?",
    "Do I need my phone to connect remotely?",
    "How long does a password have to be?",
    "How often am I forced to change my password?",
    "Can I reuse an old password?",
    "What laptop do engineers get?",
    "How much memory does the LT-1180 have?",
    "When do I get a new laptop?",
    "Who do I call at night if the servers go down?",
    "How fast must a sev 1 be acknowledged?",
    "How do I ask for new software to be installed?",
    "Who approves a software request and how long does it take?",
    "When does my laptop back itself up?",
    "How long can I get deleted files back?",
    "What's the wifi for visitors?",
    "Where do guests find the wifi password?",
    "How many colour pages can I print a month?",
    "How do printers release my jobs?",
    "I lost my phone, how do I reset my two-factor login?",
    "What's the service desk extension?",
    "What dock do desks have?",
    "Can I get an extra monitor?",
    "What is form SR-17 for?",
    "What is the DK-90?",
    "Is the LT-2231 the one with 32 GB?",
    "What extension reaches the on-call engineer?",
    "How often does the guest password change?",
]
IT_GENERAL = [
    "How does a VPN work in general?",
    "What makes a password strong?",
    "Explain what two-factor authentication is.",
    "What is the difference between RAM and storage?",
    "Write a limerick about a stubborn printer.",
    "What is cloud computing in simple words?",
    "How do I become a better public speaker?",
    "What's the capital of Canada?",
    "Explain what an IP address is.",
    "Give me tips for running a short, useful meeting.",
    "What is the difference between a laptop and a tablet?",
    "Why do computers need to restart after updates?",
    "What does a firewall do?",
    "How do I write a clear email to my manager?",
    "What are the benefits of standing desks?",
    "Explain phishing and how to spot it.",
    "What is 7 times 13?",
    "How does wifi actually transmit data?",
    "What is a good way to take notes in meetings?",
    "Who founded Microsoft?",
    "What is the difference between HTTP and HTTPS?",
    "How do I stay productive working from home?",
    "What is an operating system?",
    "Give me a fun icebreaker question for a team call.",
    "How long should a lunch break be for good focus?",
    "Why do batteries lose capacity over time?",
    "What is open-source software?",
    "How should I prepare for a job interview?",
]
IT_COMBINED = [
    "Triage this ticket and include the remote access server they should use: '{p}'",
    "Classify '{p}' and add who to call after hours if it's urgent.",
    "Give '{p}' a category and priority, and state how fast a sev 1 must be acknowledged.",
    "Label this ticket and tell them which form to fill in for new software: '{p}'",
    "Triage '{p}' and mention how long deleted files can be restored.",
    "Classify this and include the service desk extension for a lost authenticator: '{p}'",
    "Turn these notes into action items and add our password length rule to Sam's task: '{n}'",
    "Make a task list from '{n}' and note which laptop model engineers should be ordered.",
    "Summarise '{n}' as follow-ups, and add the deadline for approving software requests.",
    "Write the to-dos from '{n}' and include the guest wifi name for the visitors.",
    "List actions from '{n}' with owners, and add the monthly colour printing limit for the report.",
    "Bullet the follow-ups from '{n}' and say which dock model the new desks need.",
]


def _fill(rng: random.Random, template: str, **pools: list[str]) -> str:
    return template.format(**{k: rng.choice(v) for k, v in pools.items()})


def _order(rng: random.Random) -> str:
    return rng.choice(ORDER_MSGS).format(i=rng.choice(ITEMS), a=rng.choice(ADDRESSES))


def build(seed: int = 11, per_adapter: int = 18, per_combined: int = 28) -> list[TenantSpec]:
    """Both tenants with their labelled prompts (about 240 in all)."""
    rng = random.Random(seed)
    shop = TenantSpec(
        "shop",
        {"order-extract": SHOP_ORDER_EXEMPLARS, "reply-polish": SHOP_REPLY_EXEMPLARS},
        [{"id": i, "title": t, "source": f"shop/{i}.md", "text": x} for i, t, x in SHOP_DOCS],
    )
    it = TenantSpec(
        "itdesk",
        {"ticket-triage": TRIAGE_EXEMPLARS, "meeting-notes": NOTES_EXEMPLARS},
        [{"id": i, "title": t, "source": f"it/{i}.md", "text": x} for i, t, x in IT_DOCS],
    )
    seen: set[str] = set()

    def add(spec: TenantSpec, prompt: str, route: str, adapter: str | None = None) -> None:
        if prompt in seen:
            return
        seen.add(prompt)
        row = {"prompt": prompt, "route": route}
        if adapter:
            row["adapter"] = adapter
        spec.prompts.append(row)

    for _ in range(per_adapter * 3):
        if sum(p.get("adapter") == "order-extract" for p in shop.prompts) < per_adapter:
            add(shop, rng.choice(ORDER_ASKS).format(m=_order(rng)), "adapter", "order-extract")
        if (
            sum(
                p.get("adapter") == "reply-polish" and p["route"] == "adapter" for p in shop.prompts
            )
            < per_adapter
        ):
            add(shop, _fill(rng, rng.choice(REPLY_ASKS), d=DRAFTS), "adapter", "reply-polish")
        if (
            sum(p.get("adapter") == "ticket-triage" and p["route"] == "adapter" for p in it.prompts)
            < per_adapter
        ):
            add(it, _fill(rng, rng.choice(TRIAGE_ASKS), p=PROBLEMS), "adapter", "ticket-triage")
        if (
            sum(p.get("adapter") == "meeting-notes" and p["route"] == "adapter" for p in it.prompts)
            < per_adapter
        ):
            add(it, _fill(rng, rng.choice(NOTES_ASKS), n=NOTES), "adapter", "meeting-notes")
    for q in SHOP_FACT_QUESTIONS:
        add(shop, q, "rag")
    for q in IT_FACT_QUESTIONS:
        add(it, q, "rag")
    for q in SHOP_GENERAL:
        add(shop, q, "prompt")
    for q in IT_GENERAL:
        add(it, q, "prompt")
    for _ in range(per_combined * 4):
        if sum(p["route"] == "combined" for p in shop.prompts) < per_combined:
            t = rng.choice(SHOP_COMBINED)
            adapter = "order-extract" if "{m}" in t else "reply-polish"
            add(shop, t.format(m=_order(rng), d=rng.choice(DRAFTS)), "combined", adapter)
        if sum(p["route"] == "combined" for p in it.prompts) < per_combined:
            t = rng.choice(IT_COMBINED)
            adapter = "ticket-triage" if "{p}" in t else "meeting-notes"
            add(it, t.format(p=rng.choice(PROBLEMS), n=rng.choice(NOTES)), "combined", adapter)
    return [shop, it]
