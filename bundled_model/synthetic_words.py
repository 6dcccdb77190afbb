"""The OCR vocabulary: a few hundred common lower-case English words (3 to 8 letters).

No colour or shape names, so that an OCR answer never reads like a caption."""

WORDS: tuple[str, ...] = tuple(
    """
    able acid actor adult after agent album alarm alive angle ankle apple april arrow
    atom aunt autumn award baby bacon badge baker bamboo banana band bank barn basket
    beach bean bear beard bell belt bench berry bike bird blade blanket bloom board boat
    body bone book boot bottle bowl brain branch bread breeze brick bride bridge brush
    bucket bullet bunny butter button cabin cable cactus cake camel camera camp candle
    candy canoe canvas cape carpet carrot castle cattle cave ceiling cellar chain chair
    chalk cheese cherry chess chicken chin city clay cliff clock cloud clown coach coast
    coat coffee coin comet cookie copper corn cotton couch cousin crab crane crown
    cup curtain daisy dance desert desk diamond dinner doctor dolphin donkey door dragon
    drawer dream dress drum duck eagle earth echo engine eraser fabric face falcon farm
    feather fence field finger fire fish flag flame flour flute forest fork fossil fountain
    fox frog fruit garden garlic gate ghost giant ginger glass glove goat grape grass
    guitar hammer harbor hat hawk heart helmet hill honey horse hotel house island jacket
    jelly jewel jungle kettle key king kitchen kite kitten knee knife ladder lake lamp
    lemon letter lion lizard lock magnet mango maple market marble meadow melon metal
    milk mirror monkey moon motor mountain mouse music nail needle nest night noodle
    ocean olive onion owl paint palace panda paper parrot party peach peanut pearl pencil
    pepper piano pillow pilot planet plate pocket poem pony potato pumpkin puppy puzzle
    queen quilt rabbit radio rain river road robot rocket roof rope rose ruler saddle
    salad salt sand school scissors seed shadow sheep shell ship shirt shoe singer
    skirt sky snail snake snow soap sock soup spider spoon spring stair station stone
    storm story sugar summer sun sweater table tiger toast tomato tooth torch tower town
    toy tractor train tree truck tulip tunnel turtle uncle valley vase violin wagon wall
    wallet water whale wheel window winter wizard wolf wood wool yacht zebra
    """.split()
)
