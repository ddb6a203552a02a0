"""Random English sentences for synthesis: common words plus phonetically varied ones, no downloads."""

from __future__ import annotations

import numpy as np

# Everyday words and words chosen for their sounds (bilabials, rounded vowels, fricatives,
# clusters), so every viseme gets plenty of frames.
WORDS = tuple("""
a about above across act add after again against age ago agree air all almost alone along already
also always am among an and animal another answer any apple are area arm army around art as ask at
away baby back bad bag ball bank bar base bath be beach bear beat beautiful because bed been before
began begin behind believe below best better between big bill bird bit black blood blue board boat
body book born both bottle bottom box boy bread break bright bring brother brown build burn business
busy but buy by call came camp can captain car care carry case cat catch caught cause center chair
chance change charge cheap check cheese child choose church circle city class clean clear clock close
cloth cloud coast coat cold color come common cook cool copy corn corner cost could count country
course cover cow crowd cry cup cure cut dad dance dark day dead deal dear death decide deep degree did
die different dinner direct do doctor does dog dollar done door double down draw dream dress drink
drive drop dry during each early earth east easy eat edge egg eight either else end enjoy enough enter
even evening ever every exact example eye face fact fair fall family far farm fast father fear feel
feet fell few field fight figure fill final find fine finger finish fire first fish five floor flow
flower fly follow food foot for force forest form forward found four free fresh friend from front
fruit full fun game garden gave general gentle get girl give glad glass go gold gone good got govern
grass great green ground group grow guess guide gun had hair half hand happen happy hard has hat have
he head hear heard heart heat heavy held help her here high hill him his hold hole home hope horse hot
hour house how huge human hundred hunt hurry I ice idea if important in inch include increase iron is
island it its job join joy judge jump just keep kept key kill kind king kitchen knew know lady lake
land language large last late laugh law lay lead learn least leave led left leg less let letter level
lie life lift light like line lip list listen little live long look loose lose lot loud love low
machine made main major make man many map mark market master match matter may maybe me mean measure
meat meet member men method middle might mile milk million mind mine minute miss modern moment money
month moon more morning most mother mountain mouth move much music must my name nation near neck need
never new next nice night nine no noise north nose not note nothing notice now number object ocean
of off offer office often oh oil old on once one only open or order other our out over own page paint
pair paper park part party pass past path pay peace people perhaps person pick picture piece place
plain plan plant play please plenty pocket point poor position possible pound power practice prepare
present press pretty price print problem produce proof proper pull push put quarter queen question
quick quiet quite race rain raise ran rather reach read ready real reason receive record red remember
rest rich ride right ring rise river road rock roll room root rope rose round row rule run safe said
sail same sand sat save saw say school science sea season seat second see seem self sell send sense
sent serve set seven shape share sharp she ship shoe shop short should shoulder shout show side sight
sign silver simple since sing sister sit six size skin sky sleep slow small smell smile smooth snow so
soft soil some song soon sound south space speak special speed spell spend spoke spot spread spring
square stand star start state station stay step stick still stone stood stop store story straight
strange stream street strong study subject such sudden sugar summer sun supply sure surface surprise
sweet swim system table tail take talk tall teach team teeth tell ten test than thank that the their
them then there these they thick thin thing think third this those though thought thousand three
through throw thus tie time tiny to today together told tomorrow too took tool top total touch toward
town track trade train travel tree trip trouble true truth try tube turn two type uncle under until
up upon us use usual valley value very view village visit voice vowel wait walk wall want war warm was
wash watch water wave way we wear weather week weight well went were west what wheel when where which
while white who whole whose why wide wife wild will win wind window wing winter wire wise wish with
without woman wonder wood word work world would write wrong yard year yellow yes yet you young your
zero zoo bubble puppy mumble mop bomb pump maple bob ambulance pebble problem umbrella bamboo
shoe shoot choose juice moose prove pool food blue through rude tooth smooth whoop ooze
vivid five very value fever fifth phone photo muffin office coffee vivid valve
thumb theory thorough breathe weather feather mouth south bathroom
sheep chip ship church judge giant shower pleasure vision sugar mission
zip zebra lizard fizz buzz sizzle snooze sixty seesaw
rare rural mirror rocket really worry
""".split())

PUNCTUATION = (".", ".", ".", "?", "!", ",")


def random_sentence(rng: np.random.Generator, min_words: int = 3, max_words: int = 14) -> str:
    """A random sentence (possibly with an inner comma) from ``WORDS``."""
    n = int(rng.integers(min_words, max_words + 1))
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    if n > 5 and rng.random() < 0.4:
        words[int(rng.integers(2, n - 2))] += ","
    text = " ".join(words)
    if rng.random() < 0.15:  # numbers and letters make espeak read digits and spell
        text += f" {int(rng.integers(1, 2000))}"
    return text[0].upper() + text[1:] + PUNCTUATION[int(rng.integers(0, len(PUNCTUATION) - 1))]
