"""The three instruction templates of each dataset, per language.

Domain (MMLU): the three English templates of the authors' released `subject_qa.json`, verbatim —
including the missing space in "correct answer,followed" of the first one — so that a question
rebuilt from the CSV with the released option order gives exactly the released prompt.

Language (mLAMA): our own translations of the same three English templates into the six paper
languages, in a uniform layout (the released `language_qa.json` puts the question line on the
instruction line in some languages and not in others). Each ends with a closing cue asking which
option `[Y]` most likely is, then a response cue, as in the authors' files. Further languages (the
demo world's made-up ones) are supplied by the caller as dicts of the same pieces.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import InputError
from .render import PromptTemplate

_EN_INSTRUCTIONS = (
    "You will be asked a multiple-choice question. Respond with the letter which corresponds to the "
    "correct answer,followed by a period. There is no need to provide an explanation, so your response "
    "should be very short.",
    "Below is a multiple-choice question. Respond with the letter that best answers the question. Keep "
    "your response brief, stating only the letter corresponding to your answer, followed by a period, "
    "with no explanation.",
    "Prepare to answer a multiple-choice question. Provide the letter that corresponds to the correct "
    "answer, followed by a period. Keep your response brief; no explanations are necessary.",
)

MMLU_TEMPLATES: tuple[PromptTemplate, ...] = (
    PromptTemplate(_EN_INSTRUCTIONS[0], "Now here is the question:", "Response:"),
    PromptTemplate(_EN_INSTRUCTIONS[1], "The question is:", "Response:"),
    PromptTemplate(_EN_INSTRUCTIONS[2], "Here is the question:", "Your response:"),
)


def _three(instructions, question_lines, closing, responses) -> tuple[PromptTemplate, ...]:
    return tuple(
        PromptTemplate(instruction, question_line, response, closing)
        for instruction, question_line, response in zip(instructions, question_lines, responses)
    )


MLAMA_TEMPLATES: dict[str, tuple[PromptTemplate, ...]] = {
    "en": _three(
        (_EN_INSTRUCTIONS[0].replace("answer,followed", "answer, followed"), *_EN_INSTRUCTIONS[1:]),
        ("Now here is the question:", "The question is:", "Here is the question:"),
        "Which option is [Y] most likely to be?",
        ("Response:", "Response:", "Your response:"),
    ),
    "fr": _three(
        (
            "Vous allez devoir répondre à une question à choix multiples. Répondez par la lettre qui "
            "correspond à la bonne réponse, suivie d'un point. Aucune explication n'est nécessaire : "
            "votre réponse doit donc être très courte.",
            "Voici une question à choix multiples. Répondez par la lettre qui répond le mieux à la "
            "question. Soyez bref : indiquez uniquement la lettre correspondant à votre réponse, suivie "
            "d'un point, sans explication.",
            "Préparez-vous à répondre à une question à choix multiples. Donnez la lettre qui correspond "
            "à la bonne réponse, suivie d'un point. Soyez bref ; aucune explication n'est nécessaire.",
        ),
        ("Voici maintenant la question :", "La question est :", "Voici la question :"),
        "Parmi les options, laquelle est le plus probablement [Y] ?",
        ("Réponse :", "Réponse :", "Votre réponse :"),
    ),
    "ar": _three(
        (
            "سيُطرح عليك سؤال اختيار من متعدد. أجب بالحرف المقابل للإجابة الصحيحة متبوعًا بنقطة. "
            "لا حاجة إلى تقديم أي شرح، لذا يجب أن تكون إجابتك قصيرة جدًا.",
            "فيما يلي سؤال اختيار من متعدد. أجب بالحرف الذي يمثل أفضل إجابة عن السؤال. اجعل إجابتك "
            "موجزة، واكتفِ بذكر الحرف المقابل لإجابتك متبوعًا بنقطة، دون أي شرح.",
            "استعد للإجابة عن سؤال اختيار من متعدد. اكتب الحرف المقابل للإجابة الصحيحة متبوعًا بنقطة. "
            "اجعل إجابتك موجزة؛ لا حاجة إلى أي شرح.",
        ),
        ("والآن إليك السؤال:", "السؤال هو:", "إليك السؤال:"),
        "أيّ الخيارات هو [Y] على الأرجح؟",
        ("الإجابة:", "الإجابة:", "إجابتك:"),
    ),
    "ja": _three(
        (
            "これから多肢選択式の問題が出題されます。正解に対応するアルファベットで答え、その後にピリオドを"
            "付けてください。説明は不要なので、回答はごく短くしてください。",
            "以下は多肢選択式の問題です。問題に最もよく当てはまる答えのアルファベットで回答してください。"
            "回答は簡潔にし、答えに対応するアルファベットとピリオドだけを書き、説明は書かないでください。",
            "多肢選択式の問題に答える準備をしてください。正解に対応するアルファベットを、ピリオドを付けて"
            "答えてください。回答は簡潔にしてください。説明は必要ありません。",
        ),
        ("それでは問題です：", "問題は次のとおりです：", "問題はこちらです："),
        "[Y]に当てはまる可能性が最も高いのはどの選択肢ですか？",
        ("回答：", "回答：", "あなたの回答："),
    ),
    "ru": _three(
        (
            "Вам будет задан вопрос с несколькими вариантами ответа. Ответьте буквой, соответствующей "
            "правильному ответу, и поставьте после неё точку. Объяснять ничего не нужно, поэтому ваш "
            "ответ должен быть очень коротким.",
            "Ниже приведён вопрос с несколькими вариантами ответа. Ответьте буквой, которая лучше всего "
            "отвечает на вопрос. Отвечайте кратко: укажите только букву, соответствующую вашему ответу, "
            "и точку после неё, без объяснений.",
            "Приготовьтесь ответить на вопрос с несколькими вариантами ответа. Укажите букву, "
            "соответствующую правильному ответу, и поставьте после неё точку. Отвечайте кратко; "
            "объяснения не нужны.",
        ),
        ("А теперь вопрос:", "Вопрос:", "Вот вопрос:"),
        "Какой вариант, скорее всего, является [Y]?",
        ("Ответ:", "Ответ:", "Ваш ответ:"),
    ),
    "zh": _three(
        (
            "你将回答一道多项选择题。请用正确答案对应的字母作答，并在字母后加一个句点。无需解释，因此你的"
            "回答应当非常简短。",
            "下面是一道多项选择题。请用最能回答该问题的选项字母作答。回答要简洁，只写出与你的答案对应的"
            "字母，后面加一个句点，不要解释。",
            "请准备回答一道多项选择题。请给出正确答案对应的字母，并在后面加一个句点。回答要简短；无需任何"
            "解释。",
        ),
        ("现在请看题目：", "题目是：", "题目如下："),
        "[Y] 最有可能是哪个选项？",
        ("回答：", "回答：", "你的回答："),
    ),
}


def mlama_templates(
    language: str,
    extra: Mapping[str, Sequence[PromptTemplate | Mapping[str, Any]]] | None = None,
) -> tuple[PromptTemplate, ...]:
    """The three templates for `language`: from `extra` (caller-supplied) first, else built in.

    Raises `InputError` naming the language when neither has it, or when a supplied entry is not
    exactly three well-formed templates.
    """
    if extra and language in extra:
        entries = extra[language]
        if isinstance(entries, (str, bytes, Mapping)) or len(entries) != 3:
            raise InputError(f"instructions for language {language!r}: expected a list of 3 templates")
        return tuple(
            PromptTemplate.coerce(entry, where=f"instructions for language {language!r}, template {k + 1}")
            for k, entry in enumerate(entries)
        )
    if language in MLAMA_TEMPLATES:
        return MLAMA_TEMPLATES[language]
    known = sorted(set(MLAMA_TEMPLATES) | set(extra or {}))
    raise InputError(
        f"no instruction templates for language {language!r} (known: {', '.join(known)}); "
        "supply them with the `instructions` argument"
    )
