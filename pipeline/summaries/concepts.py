"""The built-in concept vocabulary for zero-shot tagging, and user extensions.

A `Concept` is a label shown to people, a category (place, person, vehicle, animal, object, activity,
condition) and the prompt given to the SigLIP2 text tower. English labels are prompted through a template
("a photo of a parking lot"); a label in another script is prompted as written (SigLIP2's text tower is
multilingual, and an English template around a Chinese label helps nobody).

Users extend or replace the vocabulary with a text file, one concept per line:

    # comments and blank lines are ignored
    loading dock                  -> an unprefixed line has category "custom"
    place: loading dock           -> category "place" (used as the heading of a summary line)
    object: forklift = a photo of a yellow forklift   -> explicit prompt after " = "
    place: 停车场                  -> any language

`load_vocabulary(paths, builtin=True)` returns the built-in concepts plus those of the files (a label
given again replaces the earlier entry, so a file can re-prompt a built-in concept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = ("place", "person", "vehicle", "animal", "object", "activity", "condition", "custom")
TEMPLATE = "a photo of {}"

_PLACES = """
parking lot, parking garage, street, highway, intersection, crosswalk, sidewalk, alley, bridge, tunnel,
gas station, bus stop, train station, subway platform, airport terminal, runway, harbour, dock, beach, river,
lake, forest, park, playground, garden, field, farm, desert, mountain, snowy landscape, city skyline,
residential street, front yard, backyard, driveway, gate, fence line, entrance, doorway, lobby, hallway,
corridor, staircase, elevator, office, meeting room, classroom, library, hospital room, pharmacy, shop,
supermarket aisle, checkout counter, restaurant, cafe, bar, kitchen, living room, bedroom, bathroom,
garage, basement, rooftop, balcony, warehouse, loading dock, factory floor, construction site, workshop,
server room, laboratory, gym, swimming pool, stadium, sports field, tennis court, concert hall, theater,
museum, church, market, shopping mall, hotel room, reception desk, waiting room, bank, atrium, courtyard,
plaza, campus, cemetery, port, ship deck, train interior, bus interior, car interior, airplane cabin,
tunnel entrance, toll booth, border checkpoint, security checkpoint, prison yard, barn, greenhouse,
vineyard, orchard, cave, waterfall, coastline, cliff, snowy road, dirt road, trail
"""

_PEOPLE = """
person, man, woman, child, baby, teenager, elderly person, group of people, crowd, pedestrian, cyclist,
runner, worker, construction worker, police officer, security guard, firefighter, doctor, nurse,
delivery person, cashier, chef, waiter, student, teacher, soldier, athlete, person in a hoodie,
person wearing a helmet, person wearing a mask, person in a high-visibility vest, person in a uniform,
person carrying a bag, person with a backpack, person with an umbrella, person in a wheelchair,
person on crutches, couple, family, tourist, shopper, driver, passenger, musician, dancer
"""

_VEHICLES = """
car, red car, white car, black car, taxi, police car, ambulance, fire truck, bus, school bus, truck,
delivery truck, pickup truck, van, trailer, motorcycle, scooter, bicycle, electric scooter, tractor,
forklift, excavator, bulldozer, crane, train, tram, subway train, airplane, helicopter, drone, boat,
ship, sailboat, kayak, jet ski, golf cart, shopping cart, wheelbarrow, skateboard, stroller, horse carriage,
parked cars, traffic jam, car headlights
"""

_ANIMALS = """
dog, cat, bird, pigeon, seagull, crow, duck, goose, chicken, horse, cow, sheep, goat, pig, deer, fox,
rabbit, squirrel, rat, raccoon, bear, wolf, boar, bat, insect, butterfly, bee, fish, snake, lizard,
cattle herd, flock of birds
"""

_OBJECTS = """
backpack, handbag, suitcase, luggage trolley, box, cardboard boxes, package, parcel on a doorstep,
pallet, barrel, trash can, dumpster, recycling bin, bench, chair, table, desk, sofa, bed, shelf,
cabinet, door, open door, closed door, window, broken window, glass door, garage door, gate barrier,
fence, wall, brick wall, graffiti, sign, stop sign, traffic light, traffic cone, street lamp, lamp post,
fire hydrant, mailbox, parking meter, vending machine, ATM, turnstile, ladder, scaffolding, tool box,
hammer, knife, gun, baseball bat, bottle, cup, plate, food, pizza, sandwich, fruit, vegetables, flowers,
plant, tree, bush, grass, rocks, sand, water, snow, ice, puddle, mud, smoke, fire, flames, sparks,
fireworks, flag, umbrella, balloon, ball, football, bicycle rack, helmet, hat, glasses, phone, laptop,
computer screen, television, camera, security camera, keyboard, book, newspaper, paper documents,
money, credit card, key, bag of groceries, shopping bags, tent, awning, billboard, poster, clock, mirror,
bucket, hose, rope, chain, lock, padlock, wires, cables, pipes, solar panels, antenna, satellite dish,
air conditioner, generator, fuel pump, charging station, shipping container, stack of containers,
crate, sack, tarp, carpet, curtains, light switch, fire extinguisher, alarm, first aid kit, stretcher,
wheelchair ramp, escalator, conveyor belt, machinery, robot, monitor wall, whiteboard, projector screen,
microphone, speaker, guitar, piano, toys, kite
"""

_ACTIVITIES = """
walking, running, standing, sitting, lying on the ground, falling down, jumping, climbing, climbing a fence,
crawling, dancing, fighting, hugging, shaking hands, waving, pointing, talking on the phone, typing,
reading, writing, eating, drinking, smoking, cooking, cleaning, sweeping, mopping the floor, carrying a box,
pushing a cart, pulling a trolley, lifting, loading a truck, unloading a truck, delivering a package,
opening a door, closing a door, entering a building, leaving a building, waiting in line, queueing,
shopping, paying at a counter, riding a bicycle, riding a motorcycle, driving, parking a car,
getting into a car, getting out of a car, crossing the street, jaywalking, playing football,
playing basketball, swimming, skiing, skating, fishing, gardening, painting a wall, repairing a machine,
welding, digging, construction work, loitering, stealing, vandalism, spraying graffiti, throwing an object,
kicking, arguing, shouting, crying, laughing, sleeping, meeting, presentation, teaching a class,
exercising, stretching, walking a dog, feeding birds, taking a photo, filming with a phone,
car accident, collision, crowd gathering, people running away, protest, parade, celebration, wedding,
concert, sports match, emergency response, evacuation
"""

_CONDITIONS = """
daytime, night, dusk, dawn, sunny weather, cloudy sky, rain, heavy rain, snowfall, fog, storm, wind,
lightning, darkness, bright light, street lights at night, headlights glare, indoor lighting,
low light, infrared night vision, black and white footage, blurry image, overexposed image,
camera shake, empty scene, busy scene, crowded, quiet, aerial view, close-up, wide shot, top-down view,
reflection, shadow, flood, wet road, icy road
"""

_MULTILINGUAL = """
place: 停车场 = 停车场的照片
place: 火车站 = 火车站的照片
person: 行人 = 行人的照片
vehicle: 汽车 = 汽车的照片
place: estacionamiento = una foto de un estacionamiento
person: persona caminando = una foto de una persona caminando
vehicle: coche = una foto de un coche
place: gare = une photo d'une gare
"""


@dataclass(frozen=True)
class Concept:
    label: str
    category: str = "custom"
    prompt: str | None = None

    @property
    def text(self) -> str:
        """What the text tower reads: the explicit prompt, the template for a latin label, else the label."""
        if self.prompt:
            return self.prompt
        return TEMPLATE.format(self.label) if self.label.isascii() else self.label


def _words(block: str) -> list[str]:
    return [item.strip() for item in block.replace("\n", " ").split(",") if item.strip()]


def builtin_concepts() -> list[Concept]:
    """About five hundred everyday concepts in seven categories, plus a few non-English labels."""
    concepts = []
    for category, block in (
        ("place", _PLACES),
        ("person", _PEOPLE),
        ("vehicle", _VEHICLES),
        ("animal", _ANIMALS),
        ("object", _OBJECTS),
        ("activity", _ACTIVITIES),
        ("condition", _CONDITIONS),
    ):
        concepts += [Concept(label, category) for label in _words(block)]
    concepts += parse_vocabulary(_MULTILINGUAL, "built-in multilingual labels")
    return _dedupe(concepts)


def _dedupe(concepts: Iterable[Concept]) -> list[Concept]:
    """Later entries replace earlier ones with the same label; the first position is kept."""
    by_label: dict[str, Concept] = {}
    for concept in concepts:
        by_label[concept.label] = concept
    return list(by_label.values())


class VocabularyError(ValueError):
    """A vocabulary file cannot be read or has a malformed line (the message names it)."""


def parse_vocabulary(text: str, origin: str) -> list[Concept]:
    concepts = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        prompt = None
        if " = " in line:
            line, prompt = (part.strip() for part in line.split(" = ", 1))
        category = "custom"
        head, sep, rest = line.partition(":")
        if sep and head.strip().lower() in CATEGORIES:
            category, line = head.strip().lower(), rest.strip()
        if not line or (prompt is not None and not prompt):
            raise VocabularyError(f"{origin}, line {number}: empty label or prompt in {raw.strip()!r}")
        if len(line) > 80:
            raise VocabularyError(f"{origin}, line {number}: label longer than 80 characters")
        concepts.append(Concept(line, category, prompt))
    return concepts


def load_vocabulary(paths: Sequence[str | Path] = (), *, builtin: bool = True) -> list[Concept]:
    """The built-in concepts (unless `builtin` is False) followed by the concepts of each file."""
    concepts = builtin_concepts() if builtin else []
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VocabularyError(f"vocabulary file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"cannot read vocabulary file {path}: {exc}") from None
        concepts += parse_vocabulary(text, str(path))
    concepts = _dedupe(concepts)
    if not concepts:
        raise VocabularyError("the concept vocabulary is empty: give a file with at least one concept")
    return concepts


def vocabulary_digest(concepts: Sequence[Concept], model_id: str) -> str:
    """A stable key for the text embeddings of `concepts` under the text tower `model_id`."""
    payload = json.dumps([model_id, [[c.label, c.category, c.text] for c in concepts]], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


__all__ = [
    "CATEGORIES",
    "TEMPLATE",
    "Concept",
    "VocabularyError",
    "builtin_concepts",
    "parse_vocabulary",
    "load_vocabulary",
    "vocabulary_digest",
]
